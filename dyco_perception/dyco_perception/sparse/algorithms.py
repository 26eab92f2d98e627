"""Which sparse-conv algorithm each layer runs at inference: chosen from measurements.

`bench/bench_sparse_conv.py` times every algorithm on every layer of the shipped model on a
real scan and writes `algorithms.yaml` (beside this file): one entry per layer shape (kind,
voxels, c_in, c_out) with milliseconds per algorithm. A layer at inference takes the entry of
its kind nearest in size (log voxels + log channel product) and runs the fastest algorithm that
the precision allows. No thresholds are guessed here: a new machine gets a new table by
rerunning the bench with `--write`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

# algorithm -> the matmul precision it needs ("float32" runs in either precision setting).
ALGORITHMS: dict[str, str] = {
    "torch": "float32",  # per-offset gather -> matmul -> index_add (torch_backend.py)
    "spconv": "float32",  # spconv 2.x, ConvAlgo.Native on CPU
    "gemm": "float32",  # gather-GEMM (gemm.py)
    "torch_bf16": "bfloat16",  # per-offset with bfloat16 matmuls
    "gemm_bf16": "bfloat16",  # gather-GEMM with a bfloat16 matmul
}
KIND_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "subm": tuple(ALGORITHMS),
    "down": ("torch", "spconv"),
    "up": ("torch", "spconv"),
}
PRECISIONS = ("float32", "bfloat16")
DEFAULT_TABLE = Path(__file__).with_name("algorithms.yaml")


@dataclass(frozen=True)
class LayerTiming:
    kind: str
    voxels: int
    c_in: int
    c_out: int
    ms: dict[str, float]

    def distance(self, voxels: int, c_in: int, c_out: int) -> float:
        """Size distance in log space: voxel count and channel product weigh alike."""
        size = abs(math.log(max(voxels, 1) / self.voxels))
        return size + abs(math.log((c_in * c_out) / (self.c_in * self.c_out)))


@dataclass(frozen=True)
class AlgorithmTable:
    layers: tuple[LayerTiming, ...]
    source: str = ""

    def choose(
        self, kind: str, voxels: int, c_in: int, c_out: int, precision: str, usable: set[str]
    ) -> str | None:
        """Fastest usable algorithm of the nearest measured layer of `kind`; None if none."""
        allowed = {a for a in usable if precision == "bfloat16" or ALGORITHMS[a] == "float32"}
        entries = [e for e in self.layers if e.kind == kind and allowed & set(e.ms)]
        if not entries:
            return None
        nearest = min(entries, key=lambda e: e.distance(voxels, c_in, c_out))
        times = {a: t for a, t in nearest.ms.items() if a in allowed}
        return min(times, key=times.__getitem__)


def parse_algorithm_table(data: object, source: str = "<table>") -> AlgorithmTable:
    """Validate a loaded YAML document; ValueError names the file, the entry and the key."""
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise ValueError(f"{source}: expected a mapping with a 'layers' list")
    if not data["layers"]:
        raise ValueError(f"{source}: 'layers' is empty")
    return AlgorithmTable(
        tuple(_parse_layer(e, f"{source}: layers[{i}]") for i, e in enumerate(data["layers"])),
        source,
    )


def _parse_layer(entry: object, where: str) -> LayerTiming:
    keys = {"kind", "voxels", "c_in", "c_out", "ms", "pairs"}
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - keys
    missing = {"kind", "voxels", "c_in", "c_out", "ms"} - set(entry)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    kind = entry["kind"]
    if kind not in KIND_ALGORITHMS:
        raise ValueError(f"{where}.kind: {kind!r}; choose one of {tuple(KIND_ALGORITHMS)}")
    for key in ("voxels", "c_in", "c_out"):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}.{key}: expected a positive integer, got {value!r}")
    ms = _parse_ms(entry, where)
    return LayerTiming(kind, entry["voxels"], entry["c_in"], entry["c_out"], ms)


def _parse_ms(entry: dict, where: str) -> dict[str, float]:
    ms = entry["ms"]
    if not isinstance(ms, dict) or not ms:
        raise ValueError(f"{where}.ms: expected a non-empty mapping algorithm -> milliseconds")
    for name, value in ms.items():
        if name not in KIND_ALGORITHMS[entry["kind"]]:
            raise ValueError(
                f"{where}.ms.{name}: not an algorithm for kind {entry['kind']!r}; "
                f"choose from {KIND_ALGORITHMS[entry['kind']]}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{where}.ms.{name}: expected positive milliseconds, got {value!r}")
    return {name: float(value) for name, value in ms.items()}


def load_algorithm_table(path: str | Path) -> AlgorithmTable:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    return parse_algorithm_table(data, str(path))


@functools.cache
def default_table() -> AlgorithmTable | None:
    """The shipped table, or None when absent (then "auto" means spconv when importable)."""
    return load_algorithm_table(DEFAULT_TABLE) if DEFAULT_TABLE.is_file() else None
