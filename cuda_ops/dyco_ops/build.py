"""Build the native extensions: `python -m dyco_ops.build [--cpu-only] [--force]`.

The C++ CPU extension is always built; the CUDA extension only where CUDA torch and a GPU are
present (elsewhere run `python -m dyco_ops.check_cuda` to compile-check the .cu sources).
Outputs go to dyco_ops.native.BUILD_DIR together with a stamp of the sources they came from.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from dyco_ops import native

CXX_FLAGS = ["-O3", "-std=c++17"]
NVCC_FLAGS = ["-O3", "-std=c++17", "--fmad=false"]  # no FMA contraction: distances match CPU


def _with_venv_on_path() -> None:
    """ninja lives next to the interpreter in the venv; cpp_extension looks for it on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _is_current(name: str) -> bool:
    stamp = native.stamp_path(name)
    return (
        native.library_path(name).exists()
        and stamp.exists()
        and stamp.read_text().strip() == native.sources_digest(name)
    )


def build_extension(name: str, force: bool = False, verbose: bool = False) -> Path:
    """Compile one extension into its build folder (skipped when already current)."""
    from torch.utils.cpp_extension import load

    if _is_current(name) and not force:
        print(f"[dyco_ops.build] {name}: up to date ({native.library_path(name)})")
        return native.library_path(name)
    _with_venv_on_path()
    out_dir = native.extension_dir(name)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    native.stamp_path(name).unlink(missing_ok=True)
    sources = [str(native.CSRC_DIR / s) for s in native.EXTENSIONS[name] if not s.endswith(".h")]
    start = time.perf_counter()
    load(
        name=name,
        sources=sources,
        extra_cflags=CXX_FLAGS,
        extra_cuda_cflags=NVCC_FLAGS,
        extra_include_paths=[str(native.CSRC_DIR)],
        build_directory=str(out_dir),
        verbose=verbose,
    )
    native.stamp_path(name).write_text(native.sources_digest(name) + "\n")
    print(f"[dyco_ops.build] {name}: built in {time.perf_counter() - start:.0f} s -> {out_dir}")
    return native.library_path(name)


def cuda_buildable() -> tuple[bool, str]:
    if torch.version.cuda is None:
        return False, "torch is a CPU-only build"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible"
    return True, "CUDA torch with a GPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA extension")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--verbose", action="store_true", help="show compiler commands")
    args = parser.parse_args(argv)
    build_extension("dyco_ops_cpu", args.force, args.verbose)
    ok, why = cuda_buildable()
    if args.cpu_only or not ok:
        print(f"[dyco_ops.build] dyco_ops_cuda: skipped ({'--cpu-only' if ok else why})")
    else:
        build_extension("dyco_ops_cuda", args.force, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
