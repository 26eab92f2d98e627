"""Per-layer sparse-conv timings of the shipped backbone on a real scan, per algorithm.

    python bench/bench_sparse_conv.py [--checkpoint CKPT] [--scan scene0001_00] [--points N]
                                      [--repeats 7] [--threads 1] [--write]

Runs the checkpoint's backbone once on a real scan, records every SparseConv layer's input
(kind, voxels, c_in, c_out, neighbour pairs), then times each algorithm on each layer with the
subm neighbour maps already built (shared by a level's layers, they are timed apart per level;
a down conv's own map is built inside its timing, an up conv reuses its down conv's):
spconv (Native on CPU), torch (per offset: gather -> matmul -> index_add), gemm (gather-GEMM:
one gather into (V, 27 C_in), one matmul), native (dyco_ops' output-stationary C++ kernel on
gemm's table, where it is built) and the bfloat16-matmul variants torch_bf16 and gemm_bf16
(subm only; down/up run torch or spconv). Where dyco_ops has the native table builder, gemm's
table is built by it (from the coords, no pairs) and its map row is timed that way. All
candidates of a layer are timed in the same process, interleaved, median of `--repeats`.
Layers of one shape (same kind, voxels, channels) are pooled. `--write` stores the table as
sparse/algorithms.yaml, which "auto" reads at inference (`sparse/algorithms.py`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from dyco_perception.checkpoint import build_model, load_checkpoint
from dyco_perception.model.voxelizer import point_features, voxelize
from dyco_perception.sparse import (
    SparseConv,
    SparseVoxels,
    gemm,
    native_conv,
    spconv_available,
    torch_backend,
)
from dyco_perception.sparse.algorithms import (
    ALGORITHMS,
    DEFAULT_TABLE,
    KIND_ALGORITHMS,
    parse_algorithm_table,
)

REPO = Path(__file__).resolve().parents[1]
SCANS = REPO.parent / "shared" / "data" / "scannet50k"
CHECKPOINT = REPO / "checkpoints" / "dyco3d_scannet_m16.safetensors"


def capture_layers(
    model, xyz: np.ndarray, rgb: np.ndarray
) -> list[tuple[SparseConv, SparseVoxels]]:
    """(layer, input) of every SparseConv in one backbone forward; maps of both backends are
    left in the shared cache (spconv's forward first, then torch's on the same voxels)."""
    points = torch.from_numpy(xyz)
    colours = torch.from_numpy(rgb).float() / 127.5 - 1
    batch = torch.zeros(len(points), dtype=torch.long)
    cfg = model.cfg
    features = point_features(points, colours, batch, cfg.voxel.use_rgb, cfg.voxel.use_xyz)
    vox = voxelize(points, features, batch, cfg.voxel.voxel_size, cfg.backbone.levels).voxels
    captured = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: captured.append((m, args[0])))
        for m in model.modules()
        if isinstance(m, SparseConv)
    ]
    with torch.no_grad():
        if spconv_available():
            model.set_backend("spconv")
            model.backbone(vox)
            captured.clear()
        model.set_backend("torch")
        model.backbone(vox)
    for hook in hooks:
        hook.remove()
    return [(m, x.with_features(x.features.clone())) for m, x in captured]


def neighbour_pairs(layer: SparseConv, x: SparseVoxels) -> int:
    if layer.kind == "subm":
        return int(sum(p[0].numel() for p in torch_backend.subm_pairs(x) if p) + len(x.features))
    return int(
        x.features.shape[0]
        if layer.kind == "down"
        else x.cache[("level", x.stride // 2)][0].shape[0]
    )


def candidates(layer: SparseConv, x: SparseVoxels) -> dict[str, Callable[[], object]]:
    """Each algorithm of this layer as a no-argument call (fresh SparseVoxels per call: the
    spconv path stores its newest indice dict in the cache)."""
    run = {}
    for algorithm in KIND_ALGORITHMS[layer.kind]:
        if algorithm == "spconv" and not spconv_available():
            continue
        if algorithm == "native" and not native_conv.kernel():
            continue
        run[algorithm] = _call(layer, x, algorithm)
    return run


def _call(layer: SparseConv, x: SparseVoxels, algorithm: str) -> Callable[[], object]:
    def call() -> object:
        layer.backend = "gemm" if algorithm.startswith("gemm") else algorithm.split("_")[0]
        layer.precision = "bfloat16" if algorithm.endswith("bf16") else "float32"
        assert layer.algorithm_for(x) == algorithm, (layer.algorithm_for(x), algorithm)
        if layer.kind == "down":
            # A down conv builds its map in the forward (spconv refuses an existing key for it):
            # both algorithms start from a cache without it, so both times include the map.
            cache = {k: v for k, v in x.cache.items() if k != ("down", x.stride)}
            indices = {k: v for k, v in x.cache["spconv"].items() if k != f"down{x.stride}"}
            cache["spconv"] = indices
            return layer(SparseVoxels(x.features, x.coords, x.stride, x.spatial_shape, 1, cache))
        return layer(x.with_features(x.features))

    return call


def time_layers(layers, repeats: int) -> list[dict]:
    rows = []
    for layer, x in layers:
        rows.append(
            {
                "kind": layer.kind,
                "voxels": int(x.features.shape[0]),
                "c_in": layer.in_channels,
                "c_out": layer.out_channels,
                "pairs": neighbour_pairs(layer, x),
                "runs": candidates(layer, x),
                "times": {},
            }
        )
    with torch.no_grad():
        for row in rows:  # warm-up: builds the gather-GEMM tables, grows the scratch buffer
            for run in row["runs"].values():
                run()
        for _ in range(repeats):
            for row in rows:
                for name, run in row["runs"].items():
                    start = time.perf_counter()
                    run()
                    row["times"].setdefault(name, []).append(time.perf_counter() - start)
    return rows


def pool(rows: list[dict]) -> list[dict]:
    """Layers of one shape -> one entry (median over all their runs, milliseconds)."""
    shapes: dict[tuple, dict] = {}
    for row in rows:
        key = (row["kind"], row["voxels"], row["c_in"], row["c_out"])
        entry = shapes.setdefault(key, {**{k: row[k] for k in key_names()}, "layers": 0, "t": {}})
        entry["layers"] += 1
        entry["pairs"] = row["pairs"]
        for name, values in row["times"].items():
            entry["t"].setdefault(name, []).extend(values)
    for entry in shapes.values():
        entry["ms"] = {n: round(statistics.median(v) * 1000, 3) for n, v in entry.pop("t").items()}
    return list(shapes.values())


def key_names() -> tuple[str, ...]:
    return ("kind", "voxels", "c_in", "c_out")


def map_times(layers, repeats: int) -> list[dict]:
    """Per level, building its subm neighbour maps once (ms): torch pairs, the gemm table as
    `gemm.subm_table` builds it here (natively from the coords alone when dyco_ops has the
    builder, else from the pairs: then the pairs are built first and not counted), spconv's
    indices (a first spconv call minus one that reuses them)."""
    levels = {x.stride: (layer, x) for layer, x in layers if layer.kind == "subm"}
    native_table = gemm.native_table_builder() is not None
    rows = []
    with torch.no_grad():
        for stride, (layer, x) in levels.items():
            runs = {"pairs": [], "table": [], "spconv": []}
            for _ in range(repeats):
                fresh = SparseVoxels(x.features, x.coords, stride, x.spatial_shape, 1)
                runs["pairs"].append(_seconds(lambda f=fresh: torch_backend.subm_pairs(f)))
                if native_table:  # a level without pairs in its cache, as "native" runs it
                    fresh = SparseVoxels(x.features, x.coords, stride, x.spatial_shape, 1)
                runs["table"].append(_seconds(lambda f=fresh: gemm.subm_table(f)))
                if spconv_available():
                    runs["spconv"].append(_spconv_map_seconds(layer, x))
            ms = {k: round(max(statistics.median(v), 0.0) * 1000, 3) for k, v in runs.items() if v}
            rows.append({"voxels": int(x.features.shape[0]), "ms": ms})
    return rows


def table_source() -> str:
    if gemm.native_table_builder() is not None:
        return "table: built natively from the coords (dyco_ops subm_neighbour_table)"
    return "table: scattered from the pairs (dyco_ops' native table builder not loaded)"


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _spconv_map_seconds(layer: SparseConv, x: SparseVoxels) -> float:
    layer.backend, layer.precision = "spconv", "float32"
    fresh = SparseVoxels(x.features, x.coords, x.stride, x.spatial_shape, 1)
    first = _seconds(lambda: layer(fresh))
    return first - _seconds(lambda: layer(fresh.with_features(x.features)))


def print_table(entries: list[dict], load: float) -> None:
    measured = {n for e in entries for n in e["ms"]}
    names = [
        n for n in ("spconv", "torch", "gemm", "native", "torch_bf16", "gemm_bf16") if n in measured
    ]
    print(
        f"torch threads {torch.get_num_threads()}, load average {load:.1f}: the other core was "
        "busy with a training run (timings are noisy; all algorithms interleaved in one process)"
    )
    header = [
        "layers",
        "kind",
        "voxels",
        "c_in",
        "c_out",
        "pairs/voxel",
        *names,
        "fastest fp32",
        "fastest",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    totals = dict.fromkeys(names, 0.0)
    for e in entries:
        ms = e["ms"]
        fp32 = {n: t for n, t in ms.items() if not n.endswith("bf16")}
        cells = [str(e["layers"]), e["kind"], f"{e['voxels']:,}", str(e["c_in"]), str(e["c_out"])]
        cells.append(f"{e['pairs'] / e['voxels']:.1f}")
        cells += [f"{ms[n]:.2f}" if n in ms else "-" for n in names]
        cells += [min(fp32, key=fp32.get), min(ms, key=ms.get)]
        print("| " + " | ".join(cells) + " |")
        for n in names:  # down/up have no gemm or bf16 variant: they count at torch's time
            totals[n] += e["layers"] * ms.get(n, ms["torch"])
    best32 = sum(
        e["layers"] * min(t for n, t in e["ms"].items() if not n.endswith("bf16")) for e in entries
    )
    best = sum(e["layers"] * min(e["ms"].values()) for e in entries)
    print(
        "\nsum over all layers (ms; down/up at torch's time where a column has no variant): "
        + ", ".join(f"{n} {t:.1f}" for n, t in totals.items())
        + f", best per layer fp32 {best32:.1f}, best per layer any {best:.1f}"
    )


def write_table(
    entries: list[dict], maps: list[dict], args: argparse.Namespace, path: Path
) -> None:
    header = (
        f"# Written by bench/bench_sparse_conv.py --threads {args.threads} --repeats "
        f"{args.repeats} --scan {args.scan} on {datetime.date.today()}\n"
        f"# ({platform.processor() or platform.machine()}, torch {torch.__version__}); "
        "median ms per algorithm per layer shape.\n"
        "# sparse/algorithms.py reads it: a level picks the algorithm families of least layer\n"
        "# time + map cost; a layer the fastest of those for the nearest measured shape.\n"
        "# Rerun the bench with --write on a new CPU.\n"
        f"# Maps: {table_source()}.\n"
    )
    layers = [
        {**{k: e[k] for k in (*key_names(), "pairs", "ms")}, "count": e["layers"]} for e in entries
    ]
    document = {"layers": layers, "maps": maps}
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    path.write_text(header + text)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--scan", default="scene0001_00")
    parser.add_argument("--points", type=int, default=0, help="subsample (0 = the whole scan)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help=f"write {DEFAULT_TABLE.name}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state, card = load_checkpoint(args.checkpoint)
    model = build_model(state, card).eval()
    with np.load(SCANS / f"{args.scan}.npz") as scan:
        xyz, rgb = scan["xyz"], scan["rgb"]
    if args.points:
        pick = np.random.default_rng(0).choice(len(xyz), args.points, replace=False)
        xyz, rgb = xyz[pick], rgb[pick]
    layers = capture_layers(model, xyz, rgb)
    print(f"{args.scan}: {len(xyz):,} points, {len(layers)} sparse conv layers")
    load = os.getloadavg()[0]
    entries = pool(time_layers(layers, args.repeats))
    print_table(entries, load)
    maps = map_times(layers, args.repeats)
    print(
        "\nsubm neighbour maps per level, ms (built once per forward, shared by its layers; "
        f"{table_source()}):"
    )
    for row in maps:
        print(
            f"  {row['voxels']:>7,} voxels: "
            + ", ".join(f"{k} {v:.2f}" for k, v in row["ms"].items())
        )
    print_plans(entries, maps)
    if args.write:
        write_table(entries, maps, args, DEFAULT_TABLE)


def print_plans(entries: list[dict], maps: list[dict]) -> None:
    """What "auto" runs per level with these measurements (sparse/algorithms.py)."""
    layers = [{**{k: e[k] for k in (*key_names(), "ms")}, "count": e["layers"]} for e in entries]
    table = parse_algorithm_table({"layers": layers, "maps": maps})
    usable = set(ALGORITHMS)
    if not spconv_available():
        usable.discard("spconv")
    if not native_conv.kernel():
        usable.discard("native")
    print('\n"auto" per level (subm layers: algorithm x count), float32 | bfloat16:')
    for level in maps:
        picks = {}
        for precision in ("float32", "bfloat16"):
            chosen = [
                table.choose("subm", e["voxels"], e["c_in"], e["c_out"], precision, usable)
                for e in entries
                for _ in range(e["layers"])
                if e["kind"] == "subm" and e["voxels"] == level["voxels"]
            ]
            picks[precision] = ", ".join(f"{a} x{chosen.count(a)}" for a in sorted(set(chosen)))
        print(f"  {level['voxels']:>7,} voxels: {picks['float32']} | {picks['bfloat16']}")


if __name__ == "__main__":
    main()
