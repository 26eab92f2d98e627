"""Procedural furnished rooms with ScanNet-style labels: the demo scene, `dyco-make-bag --rooms`
and extra training data (in dyco_perception, not dyco_training, because the ROS tools use it;
numpy only; never imported by the segmentation path).

A room is a rectangle (3-8 m a side) with a floor, four walls carrying doors, windows,
curtains and pictures, and furniture built from boxes and cylinders: chairs pushed against
tables and desks, beds, sofas, cabinets, fridges, toilets, sinks, bathtubs, bookshelves,
counters and other furniture. Points lie on visible surfaces only (bottoms of floor-standing
solids and the floor under them are left out), area-uniform, ``num_points`` per room, with
per-object colours, colour noise and 5 mm position noise. Everything derives from ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dyco_perception import classes
from dyco_perception.scenes import Scene, make_scene

SEM = {name: i for i, name in enumerate(classes.SEMANTIC_CLASSES)}
POSITION_NOISE_M = 0.005
COLOUR_NOISE = 8.0
# Faces of a box: -x, +x, -y, +y, -z, +z.
ALL_FACES = (True,) * 6
NO_BOTTOM = (True, True, True, True, False, True)
FRONT_ONLY = (False, False, True, False, False, False)

_BASE_COLOURS = {
    "wall": (205, 200, 190), "floor": (140, 110, 80), "cabinet": (150, 110, 70),
    "bed": (180, 170, 200), "chair": (90, 70, 50), "sofa": (110, 60, 60),
    "table": (160, 120, 80), "door": (170, 140, 100), "window": (170, 200, 220),
    "bookshelf": (120, 85, 55), "picture": (60, 90, 130), "counter": (200, 200, 195),
    "desk": (175, 150, 115), "curtain": (160, 50, 60), "refrigerator": (225, 225, 225),
    "shower curtain": (200, 220, 230), "toilet": (240, 240, 240), "sink": (235, 235, 235),
    "bathtub": (245, 245, 245), "otherfurniture": (100, 100, 110),
}  # fmt: skip


@dataclass
class _Part:
    """A surface in object-local coordinates: a box (lo, hi, faces) or a z-cylinder."""

    kind: str  # "box" | "cylinder" | "curtain"
    lo: np.ndarray
    hi: np.ndarray
    faces: tuple[bool, ...] = ALL_FACES

    def area(self) -> float:
        size = self.hi - self.lo
        if self.kind == "cylinder":
            radius = size[0] / 2
            return 2 * math.pi * radius * size[2] + math.pi * radius**2
        if self.kind == "curtain":
            return float(size[0] * size[2] * 1.2)
        sx, sy, sz = size
        face_areas = (sy * sz, sy * sz, sx * sz, sx * sz, sx * sy, sx * sy)
        return float(sum(a for a, on in zip(face_areas, self.faces, strict=True) if on))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "cylinder":
            return _sample_cylinder(rng, n, self.lo, self.hi)
        if self.kind == "curtain":
            return _sample_curtain(rng, n, self.lo, self.hi)
        return _sample_box(rng, n, self.lo, self.hi, self.faces)


def _box(lo: tuple, hi: tuple, faces: tuple[bool, ...] = ALL_FACES) -> _Part:
    return _Part("box", np.array(lo, float), np.array(hi, float), faces)


def _sample_box(
    rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray, faces: tuple[bool, ...]
) -> np.ndarray:
    size = hi - lo
    face_areas = np.array(
        [size[1] * size[2]] * 2 + [size[0] * size[2]] * 2 + [size[0] * size[1]] * 2
    )
    face_areas = face_areas * np.array(faces, float)
    face = rng.choice(6, size=n, p=face_areas / face_areas.sum())
    points = lo + rng.random((n, 3)) * size
    axis, side = face // 2, face % 2
    points[np.arange(n), axis] = np.where(side == 1, hi[axis], lo[axis])
    return points


def _sample_cylinder(
    rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    centre, radius = (lo[:2] + hi[:2]) / 2, (hi[0] - lo[0]) / 2
    height = hi[2] - lo[2]
    side_share = height / (height + radius / 2)  # 2*pi*r*h vs pi*r^2
    on_side = rng.random(n) < side_share
    angle = rng.random(n) * 2 * math.pi
    r = np.where(on_side, radius, radius * np.sqrt(rng.random(n)))
    z = np.where(on_side, lo[2] + rng.random(n) * height, hi[2])
    return np.column_stack([centre[0] + r * np.cos(angle), centre[1] + r * np.sin(angle), z])


def _sample_curtain(rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A pleated sheet in the x-z plane: y follows a sine of x."""
    x = lo[0] + rng.random(n) * (hi[0] - lo[0])
    z = lo[2] + rng.random(n) * (hi[2] - lo[2])
    depth = hi[1] - lo[1]
    y = lo[1] + depth * 0.5 * (1 + np.sin(x * 2 * math.pi / 0.15))
    return np.column_stack([x, y, z])


@dataclass
class _Object:
    semantic: str
    parts: list[_Part]
    yaw: float = 0.0
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    stuff: bool = False
    hides_floor: bool = True  # solid base: the floor under it is not scanned
    holes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # local boxes

    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    def to_world(self, local: np.ndarray) -> np.ndarray:
        return local @ self.rotation().T + self.position

    def to_local(self, world: np.ndarray) -> np.ndarray:
        return (world - self.position) @ self.rotation()

    def footprint(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned 2-D bounds."""
        lo = np.min([p.lo for p in self.parts], axis=0)
        hi = np.max([p.hi for p in self.parts], axis=0)
        corners = np.array([[x, y, 0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
        world = self.to_world(corners)[:, :2]
        return world.min(axis=0), world.max(axis=0)


# --- furniture templates (local frame: centred footprint, front towards -y, floor at z=0) ----


def _legs(w: float, d: float, h: float, t: float) -> list[_Part]:
    xs, ys = (-w / 2, w / 2 - t), (-d / 2, d / 2 - t)
    return [_box((x, y, 0), (x + t, y + t, h), NO_BOTTOM) for x in xs for y in ys]


def _chair(rng: np.random.Generator) -> list[_Part]:
    w, d = rng.uniform(0.42, 0.52), rng.uniform(0.42, 0.52)
    seat, back = rng.uniform(0.42, 0.48), rng.uniform(0.80, 0.95)
    return [
        *_legs(w, d, seat - 0.04, 0.035),
        _box((-w / 2, -d / 2, seat - 0.04), (w / 2, d / 2, seat)),
        _box((-w / 2, d / 2 - 0.05, seat), (w / 2, d / 2, back)),
    ]


def _table(rng: np.random.Generator, w: float, d: float, h: float) -> list[_Part]:
    return [*_legs(w, d, h - 0.04, 0.05), _box((-w / 2, -d / 2, h - 0.04), (w / 2, d / 2, h))]


def _desk(rng: np.random.Generator) -> list[_Part]:
    w, d, h = rng.uniform(1.1, 1.6), rng.uniform(0.6, 0.8), rng.uniform(0.72, 0.76)
    return [
        _box((-w / 2, -d / 2, 0), (-w / 2 + 0.4, d / 2, h - 0.03), NO_BOTTOM),  # drawer block
        _box((w / 2 - 0.03, -d / 2, 0), (w / 2, d / 2, h - 0.03), NO_BOTTOM),  # side panel
        _box((-w / 2, -d / 2, h - 0.03), (w / 2, d / 2, h)),
    ]


def _solid(w: float, d: float, h: float) -> list[_Part]:
    return [_box((-w / 2, -d / 2, 0), (w / 2, d / 2, h), NO_BOTTOM)]


def _bed(rng: np.random.Generator) -> list[_Part]:
    w, d = rng.choice([0.9, 1.4, 1.6, 1.8]) + rng.uniform(0, 0.1), rng.uniform(1.95, 2.15)
    base, top = rng.uniform(0.25, 0.35), rng.uniform(0.5, 0.6)
    return [
        _box((-w / 2, -d / 2, 0), (w / 2, d / 2 - 0.06, base), NO_BOTTOM),
        _box((-w / 2 + 0.03, -d / 2 + 0.03, base), (w / 2 - 0.03, d / 2 - 0.06, top)),
        _box((-w / 2, d / 2 - 0.06, 0), (w / 2, d / 2, rng.uniform(0.9, 1.2)), NO_BOTTOM),
    ]


def _sofa(rng: np.random.Generator) -> list[_Part]:
    w, d = rng.uniform(1.5, 2.3), rng.uniform(0.8, 0.95)
    seat, arm = rng.uniform(0.4, 0.48), 0.18
    return [
        _box((-w / 2 + arm, -d / 2, 0), (w / 2 - arm, d / 2 - 0.2, seat), NO_BOTTOM),
        _box((-w / 2, d / 2 - 0.2, 0), (w / 2, d / 2, rng.uniform(0.75, 0.9)), NO_BOTTOM),
        _box((-w / 2, -d / 2, 0), (-w / 2 + arm, d / 2 - 0.2, 0.6), NO_BOTTOM),
        _box((w / 2 - arm, -d / 2, 0), (w / 2, d / 2 - 0.2, 0.6), NO_BOTTOM),
    ]


def _bookshelf(rng: np.random.Generator) -> list[_Part]:
    w, d, h = rng.uniform(0.8, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.5, 2.1)
    t = 0.025
    parts = [
        _box((-w / 2, -d / 2, 0), (-w / 2 + t, d / 2, h), NO_BOTTOM),
        _box((w / 2 - t, -d / 2, 0), (w / 2, d / 2, h), NO_BOTTOM),
        _box((-w / 2 + t, d / 2 - t, 0), (w / 2 - t, d / 2, h), NO_BOTTOM),
    ]
    shelves = int(rng.integers(4, 7))
    for k in range(shelves):
        z = k * (h - t) / (shelves - 1)
        parts.append(_box((-w / 2 + t, -d / 2, z), (w / 2 - t, d / 2 - t, z + t), NO_BOTTOM))
    return parts


def _toilet(rng: np.random.Generator) -> list[_Part]:
    r = rng.uniform(0.18, 0.21)
    return [
        _Part("cylinder", np.array([-r, -0.35 - r + 0.05, 0]), np.array([r, 0.05 - 0.35 + r, 0.4])),
        _box((-0.2, 0.1, 0), (0.2, 0.3, 0.8), NO_BOTTOM),
    ]


def _sink(rng: np.random.Generator) -> list[_Part]:
    w, d = rng.uniform(0.45, 0.6), rng.uniform(0.4, 0.5)
    return [
        _Part("cylinder", np.array([-0.08, -0.08, 0]), np.array([0.08, 0.08, 0.7])),
        _box((-w / 2, -d / 2, 0.7), (w / 2, d / 2, 0.85)),
    ]


def _bathtub(rng: np.random.Generator) -> list[_Part]:
    w, d, h, t = rng.uniform(1.5, 1.75), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6), 0.07
    return [
        _box((-w / 2, -d / 2, 0), (w / 2, -d / 2 + t, h), NO_BOTTOM),
        _box((-w / 2, d / 2 - t, 0), (w / 2, d / 2, h), NO_BOTTOM),
        _box((-w / 2, -d / 2 + t, 0), (-w / 2 + t, d / 2 - t, h), NO_BOTTOM),
        _box((w / 2 - t, -d / 2 + t, 0), (w / 2, d / 2 - t, h), NO_BOTTOM),
        _box((-w / 2 + t, -d / 2 + t, 0), (w / 2 - t, d / 2 - t, 0.1), NO_BOTTOM),
    ]


def _other(rng: np.random.Generator) -> list[_Part]:
    if rng.random() < 0.4:  # bin, stool, round side table
        r = rng.uniform(0.15, 0.3)
        return [_Part("cylinder", np.array([-r, -r, 0]), np.array([r, r, rng.uniform(0.3, 0.7)]))]
    return _solid(rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.6), rng.uniform(0.4, 1.2))


_WALL_TEMPLATES = {
    "bed": _bed,
    "sofa": _sofa,
    "bookshelf": _bookshelf,
    "toilet": _toilet,
    "sink": _sink,
    "bathtub": _bathtub,
    "desk": _desk,
    "cabinet": lambda r: _solid(r.uniform(0.4, 1.2), r.uniform(0.4, 0.6), r.uniform(0.5, 2.0)),
    "refrigerator": lambda r: _solid(
        r.uniform(0.6, 0.8), r.uniform(0.6, 0.75), r.uniform(1.5, 1.9)
    ),
    "counter": lambda r: _solid(r.uniform(1.2, 2.6), r.uniform(0.55, 0.65), r.uniform(0.88, 0.93)),
    "otherfurniture": _other,
}
_ROOM_TYPES = {
    "bedroom": (["bed", "cabinet", "cabinet", "desk", "otherfurniture"], 0, (3.0, 5.0)),
    "living": (["sofa", "bookshelf", "cabinet", "otherfurniture", "sofa"], 1, (4.0, 8.0)),
    "kitchen": (["counter", "counter", "refrigerator", "sink", "cabinet"], 1, (3.0, 6.0)),
    "bathroom": (["toilet", "sink", "bathtub", "cabinet"], 0, (2.5, 4.0)),
    "office": (["desk", "desk", "bookshelf", "cabinet", "refrigerator", "otherfurniture"], 1,
               (4.0, 8.0)),
}  # fmt: skip  # (wall-standing objects, dining tables, side range m)


class _Room:
    """Placement bookkeeping: room bounds and occupied 2-D rectangles."""

    def __init__(self, width: float, depth: float) -> None:
        self.size = np.array([width, depth])
        self.occupied: list[tuple[np.ndarray, np.ndarray]] = []

    def fits(self, lo: np.ndarray, hi: np.ndarray, margin: float = 0.05) -> bool:
        if np.any(lo < -1e-6) or np.any(hi > self.size + 1e-6):
            return False
        return all(
            np.any(hi + margin <= olo) or np.any(lo - margin >= ohi) for olo, ohi in self.occupied
        )

    def claim(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.occupied.append((lo, hi))


def _wall_pose(room: _Room, wall: int, along: float, depth: float) -> tuple[float, np.ndarray]:
    """Yaw and centre of an object whose back (+y) touches ``wall`` (0 S, 1 E, 2 N, 3 W)."""
    w, d = room.size
    yaw = (math.pi, -math.pi / 2, 0.0, math.pi / 2)[wall]
    centre = (
        (along, depth / 2),
        (w - depth / 2, along),
        (along, d - depth / 2),
        (depth / 2, along),
    )[wall]
    return yaw, np.array([*centre, 0.0])


def _place_against_wall(rng: np.random.Generator, room: _Room, obj: _Object) -> bool:
    lo = np.min([p.lo for p in obj.parts], axis=0)
    hi = np.max([p.hi for p in obj.parts], axis=0)
    for _ in range(40):
        wall = int(rng.integers(4))
        length = room.size[0] if wall in (0, 2) else room.size[1]
        half_width = (hi[0] - lo[0]) / 2
        if length < 2 * half_width + 0.1:
            continue
        obj.yaw, obj.position = _wall_pose(room, wall, rng.uniform(half_width, length - half_width),
                                           hi[1] - lo[1])  # fmt: skip
        obj.position[:2] -= (
            obj.rotation() @ np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0])
        )[:2]
        flo, fhi = obj.footprint()
        if room.fits(flo, fhi):
            room.claim(flo, fhi)
            return True
    return False


def _chairs_at(rng: np.random.Generator, host: _Object, sides: list[int]) -> list[_Object]:
    """Chairs pushed against ``host`` (table/desk) on the given sides (0 front, 1 back)."""
    lo = np.min([p.lo for p in host.parts], axis=0)
    hi = np.max([p.hi for p in host.parts], axis=0)
    chairs = []
    for side in sides:
        count = max(1, int((hi[0] - lo[0]) // 0.65))
        for k in range(count):
            parts = _chair(rng)
            depth = parts[-1].hi[1] * 2
            push = rng.uniform(0.08, 0.2)  # seat slides under the top: the two touch
            x = lo[0] + (k + 0.5) * (hi[0] - lo[0]) / count + rng.uniform(-0.05, 0.05)
            y = (lo[1] - depth / 2 + push) if side == 0 else (hi[1] + depth / 2 - push)
            local_yaw = 0.0 if side == 1 else math.pi  # chair front faces the host
            chair = _Object("chair", parts, yaw=host.yaw + local_yaw + rng.uniform(-0.15, 0.15),
                            hides_floor=False)  # fmt: skip
            chair.position = host.to_world(np.array([[x, y, 0.0]]))[0]
            chairs.append(chair)
    return chairs


def _group_fits(room: _Room, objects: list[_Object]) -> bool:
    bounds = [o.footprint() for o in objects]
    lo = np.min([b[0] for b in bounds], axis=0)
    hi = np.max([b[1] for b in bounds], axis=0)
    if not room.fits(lo, hi):
        return False
    room.claim(lo, hi)
    return True


def _furnish(rng: np.random.Generator, room: _Room, kind: str) -> list[_Object]:
    wall_objects, dining, _ = _ROOM_TYPES[kind]
    objects: list[_Object] = []
    for semantic in wall_objects:
        if rng.random() < 0.15:
            continue
        obj = _Object(semantic, _WALL_TEMPLATES[semantic](rng))
        obj.hides_floor = semantic not in ("desk", "sink", "toilet")
        if not _place_against_wall(rng, room, obj):
            continue
        objects.append(obj)
        if semantic == "desk":
            chairs = _chairs_at(rng, obj, [0])
            if all(room.fits(*c.footprint(), margin=-0.3) for c in chairs):
                objects += chairs
    for _ in range(dining + int(rng.integers(0, 2))):
        objects += _place_dining_group(rng, room)
    return objects


def _place_dining_group(rng: np.random.Generator, room: _Room) -> list[_Object]:
    w, d = rng.uniform(0.8, 1.8), rng.uniform(0.7, 1.0)
    table = _Object("table", _table(rng, w, d, rng.uniform(0.72, 0.77)), hides_floor=False)
    sides = [0, 1] if w > 1.0 or rng.random() < 0.5 else [0]
    for _ in range(40):
        table.yaw = rng.choice([0.0, math.pi / 2]) + rng.uniform(-0.1, 0.1)
        table.position = np.array([*(rng.random(2) * room.size), 0.0])
        group = [table, *_chairs_at(rng, table, sides)]
        if _group_fits(room, group):
            return group
    return []


# --- walls and their openings -----------------------------------------------------------------


def _wall_items(rng: np.random.Generator, room: _Room, height: float) -> list[_Object]:
    """Doors, windows (+ curtains) and pictures as thin boxes 1-3 cm in front of the walls."""
    items: list[_Object] = []
    spans: dict[int, list[tuple[float, float]]] = {k: [] for k in range(4)}
    wanted = [("door", 1 + int(rng.random() < 0.3))]
    wanted += [("window", int(rng.integers(0, 3))), ("picture", int(rng.integers(0, 4)))]
    for semantic, count in wanted:
        for _ in range(count):
            item = _wall_item(rng, room, height, semantic, spans)
            if item is not None:
                items += item
    return items


def _wall_item(
    rng: np.random.Generator,
    room: _Room,
    height: float,
    semantic: str,
    spans: dict[int, list[tuple[float, float]]],
) -> list[_Object] | None:
    width, z0, z1 = {
        "door": (rng.uniform(0.8, 1.0), 0.0, rng.uniform(2.0, 2.1)),
        "window": (rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.0), min(height - 0.2, 2.2)),
        "picture": (rng.uniform(0.3, 0.9), rng.uniform(1.2, 1.5), rng.uniform(1.6, 1.9)),
    }[semantic]
    for _ in range(30):
        wall = int(rng.integers(4))
        length = room.size[0] if wall in (0, 2) else room.size[1]
        margin = width / 2 + (0.45 if semantic == "window" else 0.1)
        if length < 2 * margin:
            continue
        along = rng.uniform(margin, length - margin)
        reach = margin + 0.1
        if any(abs(along - a) < reach + r for a, r in spans[wall]):
            continue
        spans[wall].append((along, reach))
        thickness = 0.02 if semantic != "picture" else 0.03
        panel = _box((-width / 2, -thickness, z0), (width / 2, 0, z1), NO_BOTTOM)
        item = _Object(semantic, [panel], hides_floor=False)
        item.yaw, item.position = _wall_pose(room, wall, along, 0.0)
        out = [item]
        if semantic == "door":
            lo, hi = item.footprint()  # keep the swing area free
            room.claim(lo - width, hi + width)
        if semantic == "window" and rng.random() < 0.7:
            out.append(_curtain(rng, wall, along, width, z1, room))
        return out
    return None


def _curtain(
    rng: np.random.Generator, wall: int, along: float, width: float, top: float, room: _Room
) -> _Object:
    side = rng.choice([-1.0, 1.0])
    panel = rng.uniform(0.3, 0.45)
    x0 = side * (width / 2) - (panel if side < 0 else 0)
    part = _Part("curtain", np.array([x0, -0.12, 0.02]), np.array([x0 + panel, -0.04, top + 0.1]))
    curtain = _Object("curtain", [part], hides_floor=False)
    curtain.yaw, curtain.position = _wall_pose(room, wall, along, 0.0)
    return curtain


def _shell(room: _Room, height: float) -> list[_Object]:
    """Floor and four walls (stuff): large boxes whose inner faces are the surfaces."""
    w, d = room.size
    t = 0.1
    floor = _Object("floor", [_box((0, 0, -t), (w, d, 0), (False,) * 5 + (True,))], stuff=True)
    walls = _Object(
        "wall",
        [
            _box((-t, 0, 0), (0, d, height), (False, True, False, False, False, False)),
            _box((w, 0, 0), (w + t, d, height), (True, False, False, False, False, False)),
            _box((0, -t, 0), (w, 0, height), (False, False, False, True, False, False)),
            _box((0, d, 0), (w, d + t, height), (False, False, True, False, False, False)),
        ],
        stuff=True,
    )
    return [floor, walls]


# --- sampling ---------------------------------------------------------------------------------


def _object_colour(rng: np.random.Generator, semantic: str) -> np.ndarray:
    base = np.array(_BASE_COLOURS[semantic], float)
    return np.clip(base * rng.uniform(0.7, 1.2) + rng.normal(0, 15, 3), 0, 255)


def _sample_object(rng: np.random.Generator, obj: _Object, n: int) -> tuple[np.ndarray, np.ndarray]:
    areas = np.array([p.area() for p in obj.parts])
    counts = rng.multinomial(n, areas / areas.sum())
    local = np.concatenate([p.sample(rng, c) for p, c in zip(obj.parts, counts, strict=True)])
    colour = _object_colour(rng, obj.semantic)
    rgb = colour + rng.normal(0, COLOUR_NOISE, local.shape)
    return obj.to_world(local), rgb


def _visible(points: np.ndarray, occluders: list[_Object], on_floor: bool) -> np.ndarray:
    """False for stuff points hidden behind wall items or under solid furniture."""
    keep = np.ones(len(points), bool)
    for obj in occluders:
        lo = np.min([p.lo for p in obj.parts], axis=0) - 0.01
        hi = np.max([p.hi for p in obj.parts], axis=0) + 0.01
        local = obj.to_local(points)
        inside = np.all((local[:, :2] >= lo[:2]) & (local[:, :2] <= hi[:2]), axis=1)
        if not on_floor:  # wall items: the wall behind them, within their height
            inside &= (local[:, 2] >= lo[2]) & (local[:, 2] <= hi[2]) & (np.abs(local[:, 1]) < 0.15)
        keep &= ~inside
    return keep


def generate_room(seed: int, num_points: int = 50000) -> Scene:
    """One furnished room, fully determined by ``seed``."""
    if num_points < 1000:
        raise ValueError(f"num_points must be >= 1000, got {num_points}")
    rng = np.random.default_rng(seed)
    kind = str(rng.choice(list(_ROOM_TYPES)))
    lo_side, hi_side = _ROOM_TYPES[kind][2]
    room = _Room(rng.uniform(lo_side, hi_side), rng.uniform(lo_side, hi_side))
    height = rng.uniform(2.4, 3.0)
    wall_items = _wall_items(rng, room, height)
    furniture = _furnish(rng, room, kind)
    objects = _shell(room, height) + wall_items + furniture

    oversampled = int(num_points * 1.25)
    areas = np.array([sum(p.area() for p in o.parts) for o in objects])
    counts = rng.multinomial(oversampled, areas / areas.sum())
    xyz, rgb, semantic, instance = [], [], [], []
    for k, (obj, n) in enumerate(zip(objects, counts, strict=True)):
        points, colours = _sample_object(rng, obj, int(n))
        if obj.semantic == "floor":
            keep = _visible(points, [o for o in furniture if o.hides_floor], on_floor=True)
        elif obj.semantic == "wall":
            keep = _visible(points, wall_items, on_floor=False)
        else:
            keep = np.ones(len(points), bool)
        xyz.append(points[keep])
        rgb.append(colours[keep])
        semantic.append(np.full(keep.sum(), SEM[obj.semantic]))
        instance.append(np.full(keep.sum(), 0 if obj.stuff else k + 1))
    xyz_all = np.concatenate(xyz)
    pick = np.sort(rng.choice(len(xyz_all), size=min(num_points, len(xyz_all)), replace=False))
    noisy = xyz_all[pick] + rng.normal(0, POSITION_NOISE_M, (pick.size, 3))
    return make_scene(
        noisy.astype(np.float32),
        np.clip(np.rint(np.concatenate(rgb)[pick]), 0, 255),
        np.concatenate(semantic)[pick],
        np.concatenate(instance)[pick],
        f"room_{seed:06d}",
    )
