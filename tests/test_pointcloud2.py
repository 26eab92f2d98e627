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


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda lay, d: (lay, d + b"\x00" * 12), "data has 60 bytes"),
        (lambda lay, d: (pc2.CloudLayout(lay.fields, 12, 48, 4, 0), b""), "empty cloud"),
        (lambda lay, d: (pc2.CloudLayout(lay.fields, 12, 48, 4, -1), d), "negative size"),
        (
            lambda lay, d: (
                pc2.CloudLayout((*lay.fields[:2], Field("z", 8, FLOAT32, 2)), 16, 64, 4),
                d + d[:16],
            ),
            "must be one float32 or float64",
        ),
    ],
)
def test_mis_sized_clouds_are_refused(mutate, message: str) -> None:
    """Surplus bytes, a zero or negative height and an xyz field with several values are
    errors, not silently read."""
    layout, data = mutate(*_simple_cloud())
    with pytest.raises(pc2.CloudError, match=message):
        pc2.read_points(layout, data)


def test_a_row_with_one_non_finite_coordinate_is_not_finite() -> None:
    """`Points.finite` wants x, y and z all finite: one NaN or inf coordinate is enough."""
    xyz = np.array([[1, 2, 3], [np.nan, 2, 3], [1, np.inf, 3], [1, 2, np.nan]], np.float32)
    layout, data = pc2.write_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    assert pc2.read_points(layout, data).finite.tolist() == [True, False, False, False]


def test_colour_needs_all_three_uint8_channels() -> None:
    """Separate r, g, b colour is read only when all three are uint8 fields; r and g alone
    are no colour."""
    xyz, rgb = random_points(3, seed=6)
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "r": rgb[:, 0], "g": rgb[:, 1]}
    layout, data = pc2.write_cloud(columns)
    assert pc2.read_points(layout, data).rgb is None


def test_a_field_with_several_values_reads_as_a_column_per_value() -> None:
    """A field of count 3 is viewed as (N, 3): every value of every point, in order."""
    xyz, _ = random_points(5, seed=7)
    normals = np.arange(15, dtype=np.float32).reshape(5, 3)
    layout, data = pc2.write_cloud({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    # The same points with a 3-float "normal" field appended to each.
    wide = pc2.CloudLayout((*layout.fields, Field("normal", 12, FLOAT32, 3)), 24, 120, 5)
    records = np.frombuffer(data, np.float32).reshape(5, 3)
    data = np.concatenate([records, normals], axis=1).astype("<f4").tobytes()
    read = pc2.read_structured(wide, data, ("normal",))
    np.testing.assert_array_equal(read["normal"], normals)
    np.testing.assert_array_equal(pc2.read_points(wide, data).xyz, xyz)


def test_write_cloud_refuses_points_that_do_not_fill_whole_rows() -> None:
    """5 points cannot form 2 rows of one width."""
    with pytest.raises(ValueError, match="cannot form 2 rows"):
        pc2.write_cloud({"x": np.zeros(5, np.float32)}, height=2)


def test_a_quaternion_is_normalised_before_use() -> None:
    """(0, 0, 2, 2) is the same 90-degree rotation about z as its unit quaternion."""
    moved = pc2.transform_xyz(np.array([[1.0, 0.0, 0.0]]), (0.0, 0.0, 0.0), (0.0, 0.0, 2.0, 2.0))
    np.testing.assert_allclose(moved[0], [0.0, 1.0, 0.0], atol=1e-12)


def test_uint16_fields_read_unsigned() -> None:
    """A UINT16 field is unsigned: 0xFFFF reads as 65535, and a uint16 column writes as
    UINT16."""
    values = np.array([0, 1, 0xFFFF], np.uint16)
    layout, data = pc2.write_cloud({"ring": values})
    assert layout.fields == (Field("ring", 0, UINT16),)
    read = pc2.read_structured(layout, data)["ring"]
    assert read.tolist() == [0, 1, 65535]


def _xyz_layout(*extra: Field, point_step: int = 12, width: int = 4) -> pc2.CloudLayout:
    return pc2.CloudLayout((*XYZ32, *extra), point_step, point_step * width, width)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (_xyz_layout(Field("intensity", 8, FLOAT32, 0)), "field 'intensity' has count 0"),
        (_xyz_layout(Field("intensity", -1, UINT8)), r"'intensity' \(offset -1"),
        (_xyz_layout(Field("intensity", 9, FLOAT32)), r"'intensity' \(offset 9, 4 bytes\)"),
    ],
)
def test_a_field_of_no_values_or_outside_the_point_is_a_cloud_error(layout, message) -> None:
    """A field with count 0, a negative offset, or one byte past point_step is refused with
    a CloudError naming the field (not numpy's own error, not an empty column)."""
    with pytest.raises(pc2.CloudError, match=message):
        pc2.read_structured(layout, bytes(48))


@pytest.mark.parametrize(
    ("layout", "num_bytes", "message"),
    [
        (pc2.CloudLayout(XYZ32, 12, 48, -4), 48, "negative size -4x1"),
        (pc2.CloudLayout(XYZ32, 0, 0, 4), 0, "point_step must be positive, got 0"),
        (pc2.CloudLayout(XYZ32, 12, 40, 4), 40, "row_step 40 < width 4 \\* point_step 12"),
    ],
)
def test_inconsistent_sizes_are_named(layout, num_bytes: int, message: str) -> None:
    """A negative width, a zero point_step, or a row_step one point short of a row (with data
    that matches that row_step) is refused with the message naming that problem."""
    with pytest.raises(pc2.CloudError, match=message):
        pc2.read_points(layout, bytes(num_bytes))


def test_a_cloud_without_x_names_the_missing_field() -> None:
    """Each of x, y and z is required: a cloud of y and z only lacks ['x']."""
    layout = pc2.CloudLayout((Field("y", 0, FLOAT32), Field("z", 4, FLOAT32)), 8, 32, 4)
    with pytest.raises(pc2.CloudError, match=r"lacks field\(s\) \['x'\]"):
        pc2.read_points(layout, bytes(32))


@pytest.mark.parametrize("rgb_field", [Field("rgb", 12, FLOAT64), Field("rgb", 12, FLOAT32, 2)])
def test_a_packed_colour_must_be_one_4_byte_value(rgb_field: Field) -> None:
    """A float64 rgb or one of several values is refused, not read from its first 4 bytes."""
    layout = _xyz_layout(rgb_field, point_step=20)
    with pytest.raises(pc2.CloudError, match="must be a packed float32/uint32"):
        pc2.read_points(layout, bytes(80))


def test_separate_colour_channels_of_another_type_than_uint8_are_no_colour() -> None:
    """uint16 r, g, b are not truncated to uint8: the cloud reads as one without colour."""
    xyz, rgb = random_points(3, seed=8)
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    columns |= {c: rgb[:, i].astype(np.uint16) * 257 for i, c in enumerate("rgb")}
    layout, data = pc2.write_cloud(columns)
    assert pc2.read_points(layout, data).rgb is None


@pytest.mark.parametrize(
    "rgb", [np.zeros((2, 4), np.uint8), np.zeros(3, np.uint8), np.zeros((2, 3, 1), np.uint8)]
)
def test_pack_rgb_wants_n_by_3(rgb: np.ndarray) -> None:
    """(N, 4), 1-D and 3-D arrays are refused with the shape in the message."""
    with pytest.raises(ValueError, match=r"rgb must be \(N, 3\)"):
        pc2.pack_rgb(rgb)


def test_unpack_rgb_wants_4_byte_values() -> None:
    """Two uint16 values are not viewed as one packed colour."""
    with pytest.raises(ValueError, match="4-byte values"):
        pc2.unpack_rgb(np.zeros(2, np.uint16))


def test_write_cloud_refuses_columns_of_different_lengths_and_zero_rows() -> None:
    """Columns of 3 and 2 values, or a height of 0, are errors named as such."""
    with pytest.raises(ValueError, match="columns differ in length"):
        pc2.write_cloud({"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="cannot form 0 rows"):
        pc2.write_cloud({"x": np.zeros(4, np.float32)}, height=0)


def test_a_turn_about_the_diagonal_permutes_the_axes() -> None:
    """(0.5, 0.5, 0.5, 0.5) turns 120 degrees about (1, 1, 1): x -> y, y -> z, z -> x, which
    pins every off-diagonal entry of the rotation matrix (each is 0 or 1 here)."""
    unit = np.eye(3)
    moved = pc2.transform_xyz(unit, (0.0, 0.0, 0.0), (0.5, 0.5, 0.5, 0.5))
    np.testing.assert_allclose(moved, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)
    expected = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], np.float64)  # R, column j = image of j
    np.testing.assert_allclose(pc2.quaternion_to_matrix((0.5, 0.5, 0.5, 0.5)), expected, atol=1e-12)


@pytest.mark.parametrize(
    "quaternion", [(0, 0, 0, np.nan), (0, 0, np.inf, 1), (0, 0, 1), (0, 0, 0, 1, 0)]
)
def test_a_quaternion_of_non_finite_or_not_4_values_is_refused(quaternion) -> None:
    """NaN or inf components, and 3 or 5 values, raise naming the quaternion."""
    with pytest.raises(ValueError, match="quaternion must be 4 finite values"):
        pc2.quaternion_to_matrix(quaternion)


def test_reads_a_big_endian_duck_typed_message() -> None:
    """A message's is_bigendian flag decides the byte order of what is read."""
    xyz, _ = random_points(3, seed=9)
    values = [{"x": p[0], "y": p[1], "z": p[2]} for p in xyz]
    _, data = encode(XYZ32, 12, 1, values, big_endian=True)
    msg = SimpleNamespace(
        fields=[
            SimpleNamespace(name=f.name, offset=f.offset, datatype=f.datatype, count=1)
            for f in XYZ32
        ],
        point_step=12,
        row_step=36,
        width=3,
        height=1,
        is_bigendian=True,
        data=data,
    )
    np.testing.assert_array_equal(pc2.read_msg(msg).xyz, xyz)
