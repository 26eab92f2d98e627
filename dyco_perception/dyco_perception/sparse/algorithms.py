"""Which sparse-conv algorithm each layer runs at inference: chosen from measurements.

`bench/bench_sparse_conv.py` times every algorithm on every layer of the shipped model on a
real scan and writes `algorithms.yaml` (beside this file): one entry per layer shape (kind,
voxels, c_in, c_out, count) with milliseconds per algorithm, and per level the cost of
building each kind of neighbour map. A level's subm layers share their maps, so a level first
picks which algorithm families it uses (least summed layer time + map cost over the measured
layers of the nearest level); each layer then takes the entry of its kind nearest in size (log
voxels + log channel product) and runs the fastest of those that the precision allows. No
thresholds are guessed here: a new machine gets a new table by rerunning the bench (`--write`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from dyco_perception.sparse import gemm

# algorithm -> the matmul precision it needs ("float32" runs in either precision setting).
ALGORITHMS: dict[str, str] = {
    "torch": "float32",  # per-offset gather -> matmul -> index_add (torch_backend.py)
    "spconv": "float32",  # spconv 2.x, ConvAlgo.Native on CPU
    "gemm": "float32",  # gather-GEMM (gemm.py)
    "torch_bf16": "bfloat16",  # per-offset with bfloat16 matmuls
    "gemm_bf16": "bfloat16",  # gather-GEMM with a bfloat16 matmul
    "native": "float32",  # output-stationary C++ kernel (native_conv.py), where it is built
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
    count: int = 1  # layers of this shape in the measured model (they share the level's maps)

    def distance(self, voxels: int, c_in: int, c_out: int) -> float:
        """Size distance in log space: voxel count and channel product weigh alike."""
        size = abs(math.log(max(voxels, 1) / self.voxels))
        return size + abs(math.log((c_in * c_out) / (self.c_in * self.c_out)))


@dataclass(frozen=True)
class MapTiming:
    """Building one level's subm neighbour maps (ms), per map kind (MAP_KINDS)."""

    voxels: int
    ms: dict[str, float]


# A subm algorithm needs these neighbour maps of its level: gemm's table is scattered from
# the pairs, unless dyco_ops' native table builder is loaded, which builds it from the coords
# (`maps_needed`). The bench measures "table" as this machine builds it.
MAPS_NEEDED: dict[str, tuple[str, ...]] = {
    "torch": ("pairs",),
    "torch_bf16": ("pairs",),
    "gemm": ("pairs", "table"),
    "gemm_bf16": ("pairs", "table"),
    "spconv": ("spconv",),
    "native": ("pairs", "table"),
}
MAPS_NEEDED_NATIVE_TABLE: dict[str, tuple[str, ...]] = {
    **MAPS_NEEDED,
    "gemm": ("table",),
    "gemm_bf16": ("table",),
    "native": ("table",),
}


def maps_needed() -> dict[str, tuple[str, ...]]:
    """MAPS_NEEDED as `gemm.subm_table` builds the table here (natively or from the pairs)."""
    return MAPS_NEEDED_NATIVE_TABLE if gemm.native_table_builder() else MAPS_NEEDED


MAP_KINDS = ("pairs", "table", "spconv")
# Algorithm families a level may mix; each family brings its maps.
FAMILIES = (("torch", "torch_bf16"), ("gemm", "gemm_bf16"), ("spconv",), ("native",))


@dataclass(frozen=True)
class AlgorithmTable:
    layers: tuple[LayerTiming, ...]
    maps: tuple[MapTiming, ...] = ()
    source: str = ""

    def choose(
        self, kind: str, voxels: int, c_in: int, c_out: int, precision: str, usable: set[str]
    ) -> str | None:
        """Fastest usable algorithm of the nearest measured layer of `kind`; None if none.
        A subm layer first narrows to its level's plan (`level_plan`)."""
        allowed = {a for a in usable if precision == "bfloat16" or ALGORITHMS[a] == "float32"}
        if kind == "subm":
            allowed &= self.level_plan(voxels, allowed)
        entries = [e for e in self.layers if e.kind == kind and allowed & set(e.ms)]
        if not entries:
            return None
        nearest = min(entries, key=lambda e: e.distance(voxels, c_in, c_out))
        times = {a: t for a, t in nearest.ms.items() if a in allowed}
        return min(times, key=times.__getitem__)

    def level_plan(self, voxels: int, allowed: set[str]) -> set[str]:
        """The algorithms a level's subm layers may use: the union of families whose summed
        time over the measured layers of the nearest level, plus the maps those families
        need (built once per level), is least. Without map timings: all of `allowed`."""
        if not self.maps:
            return allowed
        level = min(self.maps, key=lambda m: abs(math.log(max(voxels, 1) / m.voxels)))
        layers = [e for e in self.layers if e.kind == "subm" and e.voxels == level.voxels]
        best, best_cost = allowed, math.inf
        for chosen in _family_unions(allowed):
            cost = _plan_cost(layers, chosen, level.ms)
            if cost < best_cost:
                best, best_cost = chosen, cost
        return best


def _family_unions(allowed: set[str]) -> list[set[str]]:
    families = [set(f) & allowed for f in FAMILIES if set(f) & allowed]
    unions = []
    for mask in range(1, 1 << len(families)):
        unions.append(set().union(*(f for i, f in enumerate(families) if mask >> i & 1)))
    return unions


def _plan_cost(layers: list[LayerTiming], chosen: set[str], map_ms: dict[str, float]) -> float:
    used, total = set(), 0.0
    for entry in layers:
        times = {a: t for a, t in entry.ms.items() if a in chosen}
        if not times:
            return math.inf
        fastest = min(times, key=times.__getitem__)
        used.add(fastest)
        total += entry.count * times[fastest]
    needed = maps_needed()
    maps = {m for a in used for m in needed[a]}
    return total + sum(map_ms.get(m, 0.0) for m in maps)


def parse_algorithm_table(data: object, source: str = "<table>") -> AlgorithmTable:
    """Validate a loaded YAML document; ValueError names the file, the entry and the key."""
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise ValueError(f"{source}: expected a mapping with a 'layers' list")
    if not data["layers"]:
        raise ValueError(f"{source}: 'layers' is empty")
    unknown = set(data) - {"layers", "maps"}
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}")
    maps = data.get("maps", [])
    if not isinstance(maps, list):
        raise ValueError(f"{source}: 'maps' must be a list")
    return AlgorithmTable(
        tuple(_parse_layer(e, f"{source}: layers[{i}]") for i, e in enumerate(data["layers"])),
        tuple(_parse_map(e, f"{source}: maps[{i}]") for i, e in enumerate(maps)),
        source,
    )


def _parse_map(entry: object, where: str) -> MapTiming:
    if not isinstance(entry, dict) or set(entry) != {"voxels", "ms"}:
        raise ValueError(f"{where}: expected a mapping with keys 'voxels' and 'ms'")
    voxels, ms = entry["voxels"], entry["ms"]
    if isinstance(voxels, bool) or not isinstance(voxels, int) or voxels < 1:
        raise ValueError(f"{where}.voxels: expected a positive integer, got {voxels!r}")
    if not isinstance(ms, dict):
        raise ValueError(f"{where}.ms: expected a mapping map kind -> milliseconds")
    for name, value in ms.items():
        if name not in MAP_KINDS:
            raise ValueError(f"{where}.ms.{name}: not a map kind; choose from {MAP_KINDS}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{where}.ms.{name}: expected milliseconds >= 0, got {value!r}")
    return MapTiming(voxels, {name: float(value) for name, value in ms.items()})


def _parse_layer(entry: object, where: str) -> LayerTiming:
    keys = {"kind", "voxels", "c_in", "c_out", "ms", "pairs", "count"}
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - keys
    missing = {"kind", "voxels", "c_in", "c_out", "ms"} - set(entry)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    kind = entry["kind"]
    if kind not in KIND_ALGORITHMS:
        raise ValueError(f"{where}.kind: {kind!r}; choose one of {tuple(KIND_ALGORITHMS)}")
    for key in ("voxels", "c_in", "c_out", "count"):
        value = entry.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}.{key}: expected a positive integer, got {value!r}")
    ms = _parse_ms(entry, where)
    count = entry.get("count", 1)
    return LayerTiming(kind, entry["voxels"], entry["c_in"], entry["c_out"], ms, count)


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
