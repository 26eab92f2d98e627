"""sensor_msgs/PointCloud2 <-> numpy, in pure numpy (no rclpy, no per-point Python).

A cloud is described by plain values (``CloudLayout``: fields, endianness, steps, size) plus its
``data`` bytes, or by any object with the PointCloud2 attributes (a rclpy or rosbags message).
Reading builds a numpy structured dtype from the fields (padding and unknown fields are skipped
through explicit offsets) and views the bytes with ``np.frombuffer``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_DATATYPE_CODES: dict[int, str] = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
}
_CODE_DATATYPES = {np.dtype(code): datatype for datatype, code in _DATATYPE_CODES.items()}
_XYZ = ("x", "y", "z")
_PACKED_COLOUR_FIELDS = ("rgb", "rgba")


class CloudError(ValueError):
    """A cloud that cannot be read: the message names what is wrong with it."""


@dataclass(frozen=True)
class Field:
    """One sensor_msgs/PointField."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True)
class CloudLayout:
    """Everything of a PointCloud2 except its header and data bytes."""

    fields: tuple[Field, ...]
    point_step: int
    row_step: int
    width: int
    height: int = 1
    is_bigendian: bool = False

    @property
    def num_points(self) -> int:
        return self.width * self.height

    @classmethod
    def of(cls, msg: Any) -> CloudLayout:
        """The layout of any object with PointCloud2's attributes (rclpy or rosbags message)."""
        fields = tuple(
            Field(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields
        )
        return cls(
            fields=fields,
            point_step=int(msg.point_step),
            row_step=int(msg.row_step),
            width=int(msg.width),
            height=int(msg.height),
            is_bigendian=bool(msg.is_bigendian),
        )


@dataclass
class Points:
    """What the segmentation needs from a cloud, one row per point in row-major order."""

    xyz: np.ndarray  # (N, 3) float32 or float64 (the cloud's precision); NaN rows kept
    rgb: np.ndarray | None  # (N, 3) uint8, or None when the cloud has no colour
    height: int
    width: int

    @property
    def num_points(self) -> int:
        return len(self.xyz)

    @property
    def finite(self) -> np.ndarray:
        """(N,) bool: rows whose x, y and z are all finite."""
        return np.all(np.isfinite(self.xyz), axis=1)


def _field_dtype(field: Field, byte_order: str) -> np.dtype:
    code = _DATATYPE_CODES.get(field.datatype)
    if code is None:
        raise CloudError(f"field '{field.name}' has unknown datatype {field.datatype}")
    base = np.dtype(byte_order + code)
    return base if field.count == 1 else np.dtype((base, (field.count,)))


def structured_dtype(layout: CloudLayout, names: tuple[str, ...] | None = None) -> np.dtype:
    """A numpy dtype of itemsize ``point_step`` with the named fields (all when None) at their
    offsets; bytes not covered (padding, other fields) are simply not viewed."""
    byte_order = ">" if layout.is_bigendian else "<"
    chosen = [f for f in layout.fields if names is None or f.name in names]
    spec: dict[str, list] = {"names": [], "formats": [], "offsets": []}
    for field in chosen:
        if field.count < 1:
            raise CloudError(f"field '{field.name}' has count {field.count}")
        dtype = _field_dtype(field, byte_order)
        if field.offset < 0 or field.offset + dtype.itemsize > layout.point_step:
            raise CloudError(
                f"field '{field.name}' (offset {field.offset}, {dtype.itemsize} bytes) does not "
                f"fit in point_step {layout.point_step}"
            )
        spec["names"].append(field.name)
        spec["formats"].append(dtype)
        spec["offsets"].append(field.offset)
    return np.dtype({**spec, "itemsize": layout.point_step})


def _check_size(layout: CloudLayout, num_bytes: int) -> None:
    if layout.width < 0 or layout.height < 0:
        raise CloudError(f"negative size {layout.width}x{layout.height}")
    if layout.num_points == 0:
        raise CloudError("empty cloud (width*height == 0)")
    if layout.point_step <= 0:
        raise CloudError(f"point_step must be positive, got {layout.point_step}")
    if layout.row_step < layout.width * layout.point_step:
        raise CloudError(
            f"row_step {layout.row_step} < width {layout.width} * point_step {layout.point_step}"
        )
    expected = layout.row_step * layout.height
    if num_bytes != expected:
        raise CloudError(
            f"data has {num_bytes} bytes, row_step {layout.row_step} * height {layout.height} "
            f"= {expected} expected (truncated or mis-sized cloud)"
        )


def read_structured(
    layout: CloudLayout, data: bytes | bytearray | memoryview | np.ndarray, names=None
) -> np.ndarray:
    """The cloud as a (height*width,) structured array of the named fields (row-major)."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buffer = buffer.reshape(-1).view(np.uint8)
    _check_size(layout, buffer.size)
    dtype = structured_dtype(layout, names)
    row_bytes = layout.width * layout.point_step
    if layout.row_step != row_bytes:  # organized cloud with padding at the end of each row
        buffer = buffer.reshape(layout.height, layout.row_step)[:, :row_bytes].reshape(-1)
    return np.frombuffer(np.ascontiguousarray(buffer), dtype=dtype)


def _check_xyz(layout: CloudLayout) -> None:
    by_name = {f.name: f for f in layout.fields}
    missing = [n for n in _XYZ if n not in by_name]
    if missing:
        have = [f.name for f in layout.fields]
        raise CloudError(f"cloud lacks field(s) {missing} (has {have})")
    for name in _XYZ:
        field = by_name[name]
        if field.datatype not in (FLOAT32, FLOAT64) or field.count != 1:
            raise CloudError(
                f"field '{name}' must be one float32 or float64, got datatype {field.datatype} "
                f"count {field.count}"
            )


def _colour_names(layout: CloudLayout) -> tuple[str, ...]:
    """The colour fields to read: a packed rgb/rgba field, else separate uint8 r, g, b."""
    by_name = {f.name: f for f in layout.fields}
    for name in _PACKED_COLOUR_FIELDS:
        field = by_name.get(name)
        if field is not None:
            if field.datatype not in (FLOAT32, UINT32, INT32) or field.count != 1:
                raise CloudError(
                    f"field '{name}' must be a packed float32/uint32, got datatype "
                    f"{field.datatype} count {field.count}"
                )
            return (name,)
    if all(by_name.get(c) is not None and by_name[c].datatype == UINT8 for c in "rgb"):
        return ("r", "g", "b")
    return ()


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) packed 0x00RRGGBB values (the bits of float32, uint32 or int32) -> (N, 3) uint8."""
    packed = np.asarray(packed)
    if packed.dtype.itemsize != 4:
        raise ValueError(f"packed colours must be 4-byte values, got {packed.dtype}")
    native = np.ascontiguousarray(packed, dtype=packed.dtype.newbyteorder("="))
    bits = native.view(np.uint32)
    shifts = np.array([16, 8, 0], dtype=np.uint32)
    return ((bits[:, None] >> shifts) & 0xFF).astype(np.uint8)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) float32 whose bits are 0x00RRGGBB (the PCL/RViz convention)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 2 or rgb.shape[1] != 3:
        raise ValueError(f"rgb must be (N, 3), got {rgb.shape}")
    channels = rgb.astype(np.uint32)
    bits = (channels[:, 0] << 16) | (channels[:, 1] << 8) | channels[:, 2]
    return bits.view(np.float32)


def read_points(layout: CloudLayout, data: Any) -> Points:
    """x, y, z (float32/float64) and colour (packed rgb/rgba or r, g, b) of every point."""
    _check_xyz(layout)
    colour = _colour_names(layout)
    if len(colour) == 1:  # read packed colour as integer bits: alpha can make a float a NaN
        fields = tuple(
            Field(f.name, f.offset, UINT32, 1) if f.name == colour[0] else f for f in layout.fields
        )
        layout = replace(layout, fields=fields)
    records = read_structured(layout, data, _XYZ + colour)
    xyz_type = np.result_type(*(records.dtype[n].newbyteorder("=") for n in _XYZ))
    xyz = np.empty((len(records), 3), dtype=xyz_type)
    for axis, name in enumerate(_XYZ):
        xyz[:, axis] = records[name]
    rgb = None
    if len(colour) == 1:
        rgb = unpack_rgb(records[colour[0]])
    elif len(colour) == 3:
        rgb = np.stack([records[c] for c in colour], axis=1).astype(np.uint8)
    return Points(xyz=xyz, rgb=rgb, height=layout.height, width=layout.width)


def read_msg(msg: Any) -> Points:
    """``read_points`` for any object with PointCloud2's attributes."""
    return read_points(CloudLayout.of(msg), msg.data)


def write_cloud(
    columns: dict[str, np.ndarray], height: int = 1, is_bigendian: bool = False
) -> tuple[CloudLayout, bytes]:
    """Pack (N,) columns into a dense cloud: fields in the given order, no padding.

    Column dtypes map to PointField types (int8..float64); the point count must equal
    height * width. Returns the layout and the data bytes."""
    if not columns:
        raise ValueError("no columns to write")
    lengths = {name: len(values) for name, values in columns.items()}
    num_points = next(iter(lengths.values()))
    if any(n != num_points for n in lengths.values()):
        raise ValueError(f"columns differ in length: {lengths}")
    if height < 1 or num_points % height:
        raise ValueError(f"{num_points} points cannot form {height} rows")
    byte_order = ">" if is_bigendian else "<"
    fields, formats, offset = [], [], 0
    for name, values in columns.items():
        native = np.dtype(np.asarray(values).dtype).newbyteorder("=")
        if native not in _CODE_DATATYPES:
            raise ValueError(f"column '{name}' has unsupported dtype {native}")
        fields.append(Field(name, offset, _CODE_DATATYPES[native]))
        formats.append((name, native.newbyteorder(byte_order)))
        offset += native.itemsize
    records = np.empty(num_points, dtype=np.dtype(formats))
    for name, values in columns.items():
        records[name] = values
    width = num_points // height
    layout = CloudLayout(tuple(fields), offset, offset * width, width, height, is_bigendian)
    return layout, records.tobytes()


def quaternion_to_matrix(quaternion: tuple[float, float, float, float]) -> np.ndarray:
    """(x, y, z, w) unit quaternion -> 3x3 rotation matrix (normalised first)."""
    q = np.asarray(quaternion, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if q.shape != (4,) or not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion must be 4 finite values of non-zero norm, got {quaternion}")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def transform_xyz(
    xyz: np.ndarray, translation: tuple[float, float, float], quaternion: tuple[float, ...]
) -> np.ndarray:
    """p' = R p + t for every row (NaN rows stay NaN), in the input's float precision."""
    rotation = quaternion_to_matrix(quaternion)
    moved = np.asarray(xyz, dtype=np.float64) @ rotation.T + np.asarray(translation, np.float64)
    return moved.astype(xyz.dtype, copy=False)
