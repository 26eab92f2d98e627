"""Locates and loads the prebuilt native extensions (never compiles: the ROS node must not stall).

`python -m dyco_ops.build` compiles them into BUILD_DIR and writes a stamp with a digest of the
sources and the torch version; a missing, stale or unloadable build is reported, not fatal, and
the ops fall back to the pure-PyTorch reference.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
CSRC_DIR = PACKAGE_DIR / "csrc"  # package data: an installed wheel can build too
BUILD_DIR = Path(os.environ.get("DYCO_OPS_BUILD_DIR", PACKAGE_DIR / "_build"))

# Extension name -> its source files (relative to CSRC_DIR).
EXTENSIONS: dict[str, list[str]] = {
    "dyco_ops_cpu": [
        "bindings.h",
        "check.h",
        "common.h",
        "cpu_ops.cpp",
        "simd.h",
        "subm_conv.h",
        "subm_conv.cpp",
        "neighbour_table.h",
        "neighbour_table.cpp",
        "dynamic_decode.h",
        "dynamic_decode.cpp",
    ],
    "dyco_ops_cuda": ["bindings.h", "check.h", "common.h", "cuda_bindings.cpp", "cuda_ops.cu"],
}
DEVICE_EXTENSION = {"cpu": "dyco_ops_cpu", "cuda": "dyco_ops_cuda"}


@dataclass(frozen=True)
class LoadResult:
    module: ModuleType | CudaKernels | None
    reason: str
    path: str


def sources_digest(name: str) -> str:
    """Digest of an extension's sources plus the torch version it must be built against."""
    digest = hashlib.sha256(torch.__version__.encode())
    for rel in EXTENSIONS[name]:
        digest.update(rel.encode())
        digest.update((CSRC_DIR / rel).read_bytes())
    return digest.hexdigest()


def extension_dir(name: str) -> Path:
    return BUILD_DIR / name


def stamp_path(name: str) -> Path:
    return extension_dir(name) / "sources.sha256"


def library_path(name: str) -> Path:
    return extension_dir(name) / f"{name}.so"


def _import_library(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class CudaKernels:
    """The CUDA module with each call run on the tensor's device and current stream."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __getattr__(self, name: str):
        kernel = getattr(self._module, name)

        def call(first: torch.Tensor, *args: object) -> object:
            with torch.cuda.device(first.device):
                stream = torch.cuda.current_stream(first.device).cuda_stream
                return kernel(first, *args, stream)

        return call


@functools.cache
def load(name: str) -> LoadResult:
    """Load one prebuilt extension if it exists and matches the current sources."""
    path = library_path(name)
    if name == "dyco_ops_cuda" and not torch.cuda.is_available():
        return LoadResult(None, "no CUDA device / CUDA torch", str(path))
    if not path.exists():
        return LoadResult(None, "not built (run `python -m dyco_ops.build`)", str(path))
    stamp = stamp_path(name)
    if not stamp.exists() or stamp.read_text().strip() != sources_digest(name):
        return LoadResult(None, "stale build (sources or torch changed; rebuild)", str(path))
    try:
        module = _import_library(name, path)
    except (ImportError, OSError) as err:
        return LoadResult(None, f"failed to load: {err}", str(path))
    if name == "dyco_ops_cuda":
        module = CudaKernels(module)
    return LoadResult(module, "loaded", str(path))


def module_for(device: torch.device) -> ModuleType | CudaKernels | None:
    """The native module serving tensors on `device`, or None."""
    name = DEVICE_EXTENSION.get(device.type)
    return None if name is None else load(name).module


def reason_for(device: torch.device) -> str:
    name = DEVICE_EXTENSION.get(device.type)
    if name is None:
        return f"no native kernels for device type {device.type!r}"
    return load(name).reason
