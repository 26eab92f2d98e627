"""Compile-check the CUDA sources without a GPU: `python -m dyco_ops.check_cuda`.

nvcc can compile the .cu files against the (CPU) torch headers but cannot link them without
CUDA torch, so this compiles each source to an object file in a temporary folder and discards
it. Exit status 0 = all sources compiled; 2 = nvcc not found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from dyco_ops import native

DEFAULT_ARCH_LIST = "8.0"


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME/bin, else PATH."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _gencode_flags(arch_list: str) -> list[str]:
    flags = []
    for arch in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        digits = arch.split("+")[0].replace(".", "")
        if digits:
            flags.append(f"-gencode=arch=compute_{digits},code=sm_{digits}")
    if not flags:
        raise ValueError(f"TORCH_CUDA_ARCH_LIST has no architectures: {arch_list!r}")
    return flags


def _include_flags() -> list[str]:
    from torch.utils.cpp_extension import include_paths

    dirs = [*include_paths(), sysconfig.get_paths()["include"]]
    flags = [f"-I{native.CSRC_DIR}"]
    for d in dirs:
        flags += ["-isystem", d]
    return flags


def compile_commands(nvcc: str, out_dir: Path, cu_only: bool = False) -> list[list[str]]:
    """One compile-only command per source of the CUDA extension (or per .cu source)."""
    defines = ["-DTORCH_EXTENSION_NAME=dyco_ops_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    common = [*defines, *_include_flags()]
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    commands = []
    for rel in native.EXTENSIONS["dyco_ops_cuda"]:
        source = native.CSRC_DIR / rel
        obj = out_dir / (source.name + ".o")
        if rel.endswith(".cu"):
            from dyco_ops.build import NVCC_FLAGS

            flags = [*NVCC_FLAGS, "--expt-relaxed-constexpr", *_gencode_flags(arch_list)]
            commands.append([nvcc, "-c", str(source), "-o", str(obj), *common, *flags])
        elif rel.endswith(".cpp") and not cu_only:
            cxx = os.environ.get("CXX", "c++")
            flags = ["-fPIC", "-O1", "-std=c++17"]
            commands.append([cxx, "-c", str(source), "-o", str(obj), *common, *flags])
    return commands


def check(verbose: bool = False, cu_only: bool = False) -> None:
    """Compile the CUDA-extension sources; raises RuntimeError with the compiler output."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    with tempfile.TemporaryDirectory(prefix="dyco_ops_nvcc_") as tmp:
        for command in compile_commands(nvcc, Path(tmp), cu_only):
            if verbose:
                print(" ".join(command))
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise RuntimeError(
                    f"compiling {command[2]} failed:\n{run.stdout}\n{run.stderr}"[-8000:]
                )


def main() -> int:
    try:
        check(verbose="--verbose" in sys.argv, cu_only="--cu-only" in sys.argv)
    except FileNotFoundError as err:
        print(f"[dyco_ops.check_cuda] skipped: {err}")
        return 2
    except RuntimeError as err:
        print(f"[dyco_ops.check_cuda] FAILED: {err}")
        return 1
    print("[dyco_ops.check_cuda] all CUDA extension sources compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
