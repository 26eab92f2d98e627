"""PointCloud2 <-> numpy: every layout the node accepts, checked against a struct-based encoder."""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from dyco_perception.pointcloud2 import FLOAT32, FLOAT64, INT32, UINT8, UINT16, UINT32, Field

from dyco_perception import pointcloud2 as pc2

_STRUCT_CODES = {FLOAT32: "f", FLOAT64: "d", UINT32: "I", INT32: "i", UINT8: "B", UINT16: "H"}


def encode(fields, point_step, rows, values, big_endian=False, row_pad=0):
    """Reference encoder, one point at a time with struct: values[i][name] per point; padding
    bytes are filled with 0xAB so that reading them by mistake shows up."""
    order = ">" if big_endian else "<"
    points = []
    for value in values:
        buf = bytearray(b"\xab" * point_step)
        for f in fields:
            code = _STRUCT_CODES[f.datatype]
            if f.datatype == FLOAT32 and isinstance(value[f.name], int):
                code = "I"  # raw bits: a Python float round trip would quieten NaN patterns
            struct.pack_into(order + code, buf, f.offset, value[f.name])
        points.append(bytes(buf))
    width = len(values) // rows
    row_step = width * point_step + row_pad
    data = b"".join(
        b"".join(points[r * width : (r + 1) * width]) + b"\xcd" * row_pad for r in range(rows)
    )
    layout = pc2.CloudLayout(tuple(fields), point_step, row_step, width, rows, big_endian)
    return layout, data


def packed_float(r: int, g: int, b: int, a: int = 0) -> float:
    r, g, b, a = int(r), int(g), int(b), int(a)  # numpy uint8 would overflow in the shifts
    return struct.unpack("<f", struct.pack("<I", (a << 24) | (r << 16) | (g << 8) | b))[0]


def random_points(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-50, 50, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return xyz, rgb


XYZ32 = (Field("x", 0, FLOAT32), Field("y", 4, FLOAT32), Field("z", 8, FLOAT32))


def test_dense_xyz_float_rgb_reads_exactly() -> None:
    xyz, rgb = random_points(37)
    fields = (*XYZ32, Field("rgb", 12, FLOAT32))
    values = [
        {"x": p[0], "y": p[1], "z": p[2], "rgb": packed_float(*c)}
        for p, c in zip(xyz, rgb, strict=True)
    ]
    layout, data = encode(fields, 16, 1, values)
    points = pc2.read_points(layout, data)
    np.testing.assert_array_equal(points.xyz, xyz)
    np.testing.assert_array_equal(points.rgb, rgb)
    assert points.xyz.dtype == np.float32


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("colour_type", [FLOAT32, UINT32])
def test_padded_float64_rgba_layout_either_endianness(big_endian: bool, colour_type: int) -> None:
    """float64 xyz, alpha 0xFF (makes some float patterns NaN), fields out of order, padding."""
    xyz, rgb = random_points(25, seed=1)
    xyz64 = xyz.astype(np.float64) + 1e-9  # a value float32 cannot hold
    fields = (
        Field("intensity", 0, FLOAT32),
        Field("z", 8, FLOAT64),
        Field("rgba", 16, colour_type),
        Field("x", 24, FLOAT64),
        Field("y", 36, FLOAT64),
    )
    values = []
    for p, c in zip(xyz64, rgb, strict=True):
        bits = 0xFF000000 | (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])
        values.append({"intensity": 1.0, "x": p[0], "y": p[1], "z": p[2], "rgba": bits})
    layout, data = encode(fields, 48, 1, values, big_endian=big_endian)
    points = pc2.read_points(layout, data)
    assert points.xyz.dtype == np.float64
    np.testing.assert_array_equal(points.xyz, xyz64)
    np.testing.assert_array_equal(points.rgb, rgb)


def test_organized_cloud_with_row_padding_and_nan_points() -> None:
    rows, width = 3, 5
    xyz, _ = random_points(rows * width, seed=2)
    xyz[[1, 7]] = np.nan
    values = [{"x": p[0], "y": p[1], "z": p[2]} for p in xyz]
    layout, data = encode(XYZ32, 12, rows, values, row_pad=6)
    points = pc2.read_points(layout, data)
    assert (points.height, points.width, points.rgb) == (rows, width, None)
    np.testing.assert_array_equal(points.xyz, xyz)  # NaN == NaN in assert_array_equal
    assert points.finite.tolist() == [i not in (1, 7) for i in range(rows * width)]


def test_separate_uint8_colour_channels() -> None:
    xyz, rgb = random_points(9, seed=3)
    fields = (*XYZ32, Field("r", 12, UINT8), Field("g", 13, UINT8), Field("b", 14, UINT8))
    values = [
        {"x": p[0], "y": p[1], "z": p[2], "r": c[0], "g": c[1], "b": c[2]}
        for p, c in zip(xyz, rgb, strict=True)
    ]
    layout, data = encode(fields, 16, 1, values)
    np.testing.assert_array_equal(pc2.read_points(layout, data).rgb, rgb)


def test_reads_duck_typed_messages() -> None:
    xyz, _ = random_points(4, seed=4)
    layout, data = encode(XYZ32, 12, 1, [{"x": p[0], "y": p[1], "z": p[2]} for p in xyz])
    msg = SimpleNamespace(
        fields=[
            SimpleNamespace(name=f.name, offset=f.offset, datatype=f.datatype, count=1)
            for f in layout.fields
        ],
        point_step=12,
        row_step=48,
        width=4,
        height=1,
        is_bigendian=False,
        data=list(data),
    )
    msg.data = bytearray(data)
    np.testing.assert_array_equal(pc2.read_msg(msg).xyz, xyz)


@pytest.mark.parametrize("big_endian", [False, True])
def test_write_then_read_round_trip_and_matches_reference_bytes(big_endian: bool) -> None:
    xyz, rgb = random_points(12, seed=5)
    label = np.arange(12, dtype=np.int32) - 1
    columns = {
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "rgb": pc2.pack_rgb(rgb),
        "label": label,
    }
    layout, data = pc2.write_cloud(columns, height=3, is_bigendian=big_endian)
    assert (layout.height, layout.width, layout.point_step) == (3, 4, 20)
    assert [(f.name, f.offset, f.datatype) for f in layout.fields][-1] == ("label", 16, INT32)
    values = [
        {"x": p[0], "y": p[1], "z": p[2], "rgb": packed_float(*c), "label": int(lab)}
        for p, c, lab in zip(xyz, rgb, label, strict=True)
    ]
    _, reference = encode(layout.fields, 20, 3, values, big_endian=big_endian)
    assert data == reference
    points = pc2.read_points(layout, data)
    np.testing.assert_array_equal(points.xyz, xyz)
    np.testing.assert_array_equal(points.rgb, rgb)
    records = pc2.read_structured(layout, data, ("label",))
    np.testing.assert_array_equal(records["label"], label)


def _simple_cloud(n: int = 4):
    xyz, _ = random_points(n)
    return pc2.write_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda lay, d: (lay, d[:-3]), "truncated"),
        (lambda lay, d: (pc2.CloudLayout(lay.fields, 12, 0, 0, 1), b""), "empty cloud"),
        (lambda lay, d: (pc2.CloudLayout(lay.fields[:2], 12, 48, 4), d), "lacks field"),
        (
            lambda lay, d: (
                pc2.CloudLayout((*lay.fields[:2], Field("z", 8, UINT32)), 12, 48, 4),
                d,
            ),
            "must be one float32 or float64",
        ),
        (lambda lay, d: (pc2.CloudLayout(lay.fields, 8, 32, 4), d[:32]), "does not fit"),
        (lambda lay, d: (pc2.CloudLayout(lay.fields, 12, 40, 4), d), "row_step"),
    ],
)
def test_bad_clouds_raise_a_cloud_error_naming_the_problem(mutate, message: str) -> None:
    layout, data = mutate(*_simple_cloud())
    with pytest.raises(pc2.CloudError, match=message):
        pc2.read_points(layout, data)


def test_pack_unpack_rgb_inverse_and_known_bits() -> None:
    rgb = np.array([[255, 0, 0], [1, 2, 3]], dtype=np.uint8)
    packed = pc2.pack_rgb(rgb)
    assert packed.view(np.uint32).tolist() == [0xFF0000, 0x010203]
    np.testing.assert_array_equal(pc2.unpack_rgb(packed), rgb)


def test_static_transform_rotates_then_translates() -> None:
    half = math.sqrt(0.5)  # 90 degrees about z: x -> y
    xyz = np.array([[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]], dtype=np.float32)
    moved = pc2.transform_xyz(xyz, (0.0, 0.0, 2.0), (0.0, 0.0, half, half))
    np.testing.assert_allclose(moved[0], [0.0, 1.0, 2.0], atol=1e-6)
    assert np.isnan(moved[1]).all() and moved.dtype == np.float32
    with pytest.raises(ValueError, match="quaternion"):
        pc2.transform_xyz(xyz, (0, 0, 0), (0, 0, 0, 0))


def test_fields_of_unknown_type_are_skipped_unless_asked_for() -> None:
    layout, data = _simple_cloud()
    odd = pc2.CloudLayout((*layout.fields, Field("q", 0, 99)), 12, 48, 4)
    assert pc2.read_points(odd, data).num_points == 4
    with pytest.raises(pc2.CloudError, match="unknown datatype 99"):
        pc2.read_structured(odd, data)
