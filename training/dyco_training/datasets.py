"""Scene readers for every data source training uses, all returning `scenes.Scene` (core).

Sources: the scannet50k npz format (read by the core, `dyco_perception.scenes`, which the bag
tools use too), ScanNet as preprocessed by PointGroup (``*_inst_nostuff.pth``), and S3DIS
``Area_N/<room>/Annotations``; plus the train/val split of the scannet50k scans.

S3DIS -> ScanNet class mapping (S3DIS has 13 classes; ScanNet's NYU40 labels decide):
    wall -> wall, floor -> floor, chair -> chair, table -> table, door -> door,
    window -> window, sofa -> sofa, bookcase -> bookshelf;
    ceiling (NYU40 22), beam and column (NYU40 38 "otherstructure"), board (whiteboards are
    NYU40 30), clutter and stairs are not ScanNet benchmark classes -> ignore (-100).
    Any other annotation name is ignored too, and counted in a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from dyco_perception.scenes import IGNORE, Scene, load_npz_scene, make_scene

from dyco_perception import classes

# ../shared beside the repository: the licensed data stays there and is never copied in.
SHARED_DIR = Path(__file__).resolve().parents[2].parent / "shared"
SCANNET50K_DIR = SHARED_DIR / "data" / "scannet50k"
EVAL_VECTORS_DIR = SHARED_DIR / "eval_vectors"

log = logging.getLogger(__name__)

VAL_ROOMS: tuple[str, ...] = ("scene0009", "scene0010")

S3DIS_TO_SEMANTIC: dict[str, int] = {
    name: classes.SEMANTIC_CLASSES.index(target)
    for name, target in {
        "wall": "wall",
        "floor": "floor",
        "chair": "chair",
        "table": "table",
        "door": "door",
        "window": "window",
        "sofa": "sofa",
        "bookcase": "bookshelf",
    }.items()
}
S3DIS_IGNORED: tuple[str, ...] = ("ceiling", "beam", "column", "board", "clutter", "stairs")


def room_of(name: str) -> str:
    """'scene0009_01' -> 'scene0009'; other names are their own room."""
    match = re.fullmatch(r"(scene\d{4})_\d+", name)
    return match.group(1) if match else name


def split_names(names: Iterable[str], val_rooms: Sequence[str] = VAL_ROOMS) -> dict[str, list[str]]:
    """Split scan names so that no room is in both: rescans of ``val_rooms`` go to val."""
    out: dict[str, list[str]] = {"train": [], "val": []}
    for name in sorted(names):
        out["val" if room_of(name) in val_rooms else "train"].append(name)
    return out


def list_npz_scans(
    folder: str | Path, split: str | None = None, names: Iterable[str] | None = None
) -> list[Path]:
    """Sorted npz scans of a folder, optionally one split ('train'/'val') and/or named scans."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"scan folder {folder} does not exist")
    paths = {p.stem: p for p in sorted(folder.glob("*.npz"))}
    selected = sorted(paths)
    if split is not None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        selected = split_names(selected)[split]
    if names is not None:
        wanted = set(names)
        unknown = wanted - set(paths)
        if unknown:
            raise ValueError(f"scans not found in {folder}: {sorted(unknown)}")
        selected = [n for n in selected if n in wanted]
    return [paths[n] for n in selected]


def iter_scenes(paths: Sequence[str | Path], progress: bool = True) -> Iterator[Scene]:
    """Load scenes of any supported layout one by one, with a progress bar."""
    from tqdm import tqdm

    for path in tqdm(paths, desc="scans", unit="scan", disable=not progress):
        yield load_scene(path)


def load_scene(path: str | Path) -> Scene:
    """Dispatch on the layout: ``.npz``, ``.pth`` or an S3DIS room folder."""
    path = Path(path)
    if path.suffix == ".npz":
        return load_npz_scene(path)
    if path.suffix == ".pth":
        return load_pointgroup_pth(path)
    if (path / "Annotations").is_dir():
        return load_s3dis_room(path)
    raise ValueError(f"{path}: unknown scan layout (expected .npz, .pth or an S3DIS room)")


# --- PointGroup-preprocessed ScanNet ----------------------------------------------------------


_NUMERIC_DTYPE_CLASSES = tuple(
    type(np.dtype(code)) for code in "?bBhHiIlLqQefdg"
)  # numpy 2 pickles an array's dtype through its class (Float32DType, ...)


def _numpy_safe_globals() -> list:
    """The only globals a pickled tuple of plain numpy arrays needs. They rebuild arrays from
    raw bytes and never run user code; object arrays are rejected after loading."""
    from numpy._core.multiarray import _reconstruct

    return [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),  # files written by numpy 1.x
        np.ndarray,
        np.dtype,
        *_NUMERIC_DTYPE_CLASSES,
    ]


def _as_numeric_array(value: object, what: str, path: Path) -> np.ndarray:
    if hasattr(value, "numpy") and hasattr(value, "detach"):
        value = value.detach().cpu().numpy()  # a torch tensor
    if not isinstance(value, np.ndarray) or not (
        np.issubdtype(value.dtype, np.number) or value.dtype == bool
    ):
        raise ValueError(f"{path}: {what} is not a numeric array ({type(value).__name__})")
    return value


def load_pointgroup_pth(path: str | Path) -> Scene:
    """Read ``*_inst_nostuff.pth``: a torch-saved tuple (xyz, rgb in [-1, 1], semantic 0..19 /
    -100, instance 0..K-1 / -100). Loaded with ``weights_only=True`` and only numpy's
    array-rebuilding globals allowed: anything else in the pickle is refused."""
    import pickle

    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refusing to load, the pickle needs globals beyond numpy arrays "
            f"and tensors ({str(err).splitlines()[-1][:200]})"
        ) from err
    if not isinstance(content, (tuple, list)) or len(content) < 4:
        raise ValueError(f"{path}: expected a tuple (xyz, rgb, semantic, instance)")
    xyz, rgb, semantic, instance = (
        _as_numeric_array(v, w, path)
        for v, w in zip(content[:4], ("xyz", "rgb", "semantic", "instance"), strict=True)
    )
    if rgb.size and (rgb.min() < -1.001 or rgb.max() > 1.001):
        raise ValueError(f"{path}: rgb must lie in [-1, 1] (PointGroup layout)")
    rgb_u8 = np.clip(np.rint((rgb.astype(np.float64) + 1.0) * 127.5), 0, 255)
    instance = np.asarray(instance, dtype=np.int64)
    name = path.name.removesuffix(".pth").removesuffix("_inst_nostuff")
    return make_scene(xyz, rgb_u8, semantic, np.where(instance >= 0, instance + 1, 0), name)


# --- S3DIS ------------------------------------------------------------------------------------

_ANNOTATION = re.compile(r"(?P<cls>[A-Za-z]+)_(?P<k>\d+)\.txt")


def _read_xyzrgb(path: Path) -> np.ndarray:
    """x y z r g b rows; malformed lines (S3DIS has a few) are skipped and logged."""
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError:
        good, skipped = [], 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                good.append([float(v) for v in line.split()])
            except ValueError:
                skipped += 1
        rows = np.array([g for g in good if len(g) == 6], dtype=np.float64).reshape(-1, 6)
        log.warning("%s: skipped %d malformed lines", path, skipped)
    if rows.shape[1] < 6:
        raise ValueError(f"{path}: need 6 columns x y z r g b, got {rows.shape[1]}")
    return rows[:, :6]


def load_s3dis_room(room_dir: str | Path, max_points: int | None = None, seed: int = 0) -> Scene:
    """Read an S3DIS room folder (``Annotations/<class>_<k>.txt``); every annotation file of a
    mapped thing class is one instance. ``max_points`` randomly subsamples (seeded)."""
    room_dir = Path(room_dir)
    files = sorted((room_dir / "Annotations").glob("*.txt"))
    if not files:
        raise ValueError(f"{room_dir}: no Annotations/*.txt files")
    parts, unknown = [], set()
    for k, file in enumerate(files):
        match = _ANNOTATION.fullmatch(file.name)
        name = match.group("cls").lower() if match else file.stem
        semantic = S3DIS_TO_SEMANTIC.get(name, IGNORE)
        if name not in S3DIS_TO_SEMANTIC and name not in S3DIS_IGNORED:
            unknown.add(name)
        rows = _read_xyzrgb(file)
        parts.append((rows, np.full(len(rows), semantic), np.full(len(rows), k + 1)))
    if unknown:
        log.warning("%s: unknown S3DIS classes ignored: %s", room_dir, sorted(unknown))
    rows = np.concatenate([p[0] for p in parts])
    semantic = np.concatenate([p[1] for p in parts])
    instance = np.concatenate([p[2] for p in parts])
    if max_points is not None and len(rows) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_points, replace=False))
        rows, semantic, instance = rows[keep], semantic[keep], instance[keep]
    name = f"{room_dir.parent.name}_{room_dir.name}"
    rgb = np.clip(rows[:, 3:6], 0, 255)
    return make_scene(rows[:, :3], rgb, semantic, instance, name)


def list_s3dis_rooms(root: str | Path, areas: Iterable[int] | None = None) -> list[Path]:
    """Room folders under an S3DIS root (``Area_N/<room>/Annotations``), sorted."""
    root = Path(root)
    rooms = sorted(p.parent for p in root.glob("Area_*/*/Annotations") if p.is_dir())
    if areas is not None:
        wanted = {f"Area_{a}" for a in areas}
        rooms = [r for r in rooms if r.parent.name in wanted]
    if not rooms:
        raise ValueError(f"no S3DIS rooms under {root}")
    return rooms
