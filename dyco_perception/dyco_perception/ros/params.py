"""The node's parameters: one table of name, default, description, range and check.

`config/segment.yaml` holds the same defaults for launch files; `NodeSettings.from_values` turns
a {name: value} dict into validated settings (ValueError naming the parameter otherwise), used
both at start and by the on-set-parameters callback.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dyco_perception.objects import ObjectMapConfig
from dyco_perception.tiling import RegionOfInterest

DEFAULT_DECODER = "dyco3d"  # the decoders' cross-validation winner (README)


def shipped_checkpoint(decoder: str = "") -> str:
    """The checkpoint shipped for `decoder` (DEFAULT_DECODER's when empty), relative to the
    package share directory."""
    return f"checkpoints/{decoder or DEFAULT_DECODER}_scannet_m16.safetensors"


SHIPPED_CHECKPOINT = shipped_checkpoint()
OUTPUTS = ("cloud", "instances", "markers", "class_map", "diagnostics")
RELIABILITY = ("reliable", "best_effort")
DURABILITY = ("volatile", "transient_local")
ROI_MODES = ("none", "box", "radius")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    read_only: bool = False  # model, QoS, publishers: a restart (managed node: a re-configure)
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    check: Callable[[Any], str | None] | None = None  # returns the reason when invalid
    constraints: str = ""


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {list(choices)}, got {v!r}"


def _check_device(value: str) -> str | None:
    return None if _DEVICE.match(value) else f"must be auto, cpu, cuda or cuda:N, got {value!r}"


def _check_outputs(values: list[str]) -> str | None:
    unknown = [v for v in values if v not in OUTPUTS]
    return f"unknown outputs {unknown}; choose from {list(OUTPUTS)}" if unknown else None


def _check_vector(size: int) -> Callable[[Any], str | None]:
    def check(values: list[float]) -> str | None:
        if len(values) != size or not all(math.isfinite(v) for v in values):
            return f"must be {size} finite numbers, got {list(values)}"
        return None

    return check


def _check_decoder(value: str) -> str | None:
    from dyco_perception.model.decoders import DECODERS

    if value and value not in DECODERS:
        known = ", ".join(sorted(DECODERS))
        return f"names an unknown decoder {value!r}; known decoders: {known} (or empty: any)"
    return None


def _check_rotation(values: list[float]) -> str | None:
    reason = _check_vector(4)(values)
    if reason is None and abs(float(np.linalg.norm(values)) - 1.0) > 1e-3:
        return f"must be a unit quaternion (x, y, z, w), got norm {np.linalg.norm(values):.4f}"
    return reason


SPECS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "checkpoint",
        "",
        "Model checkpoint (.safetensors). Empty: the shipped checkpoint of `decoder` "
        "(checkpoints/<decoder>_scannet_m16.safetensors; dyco3d's when decoder is empty). "
        "Absolute paths are used as given; paths starting with ./ or ../ are relative to the "
        "working directory; any other relative path to the package share directory (then the "
        "source repository), never the working directory.",
        read_only=True,
        constraints="empty | a .safetensors path",
    ),
    ParamSpec(
        "decoder",
        "",
        "The instance decoder of the loaded checkpoint (dyco3d, pointgroup, dknet or isbnet), "
        "set by the node once the model is loaded. Given at start it is an expectation: a "
        "checkpoint with another decoder fails the start, and with an empty checkpoint the "
        "decoder's shipped checkpoint runs (launch: decoder:=NAME).",
        check=_check_decoder,
        constraints="empty | a registered decoder name",
    ),
    ParamSpec(
        "device",
        "auto",
        "Inference device: auto (CUDA when available), cpu, cuda or cuda:N.",
        read_only=True,
        check=_check_device,
        constraints="auto | cpu | cuda | cuda:N",
    ),
    ParamSpec(
        "threads",
        1,
        "CPU threads for one cloud's inference: torch intra-op threads for a cloud of one block "
        "(inter-op is 1), blocks side by side, one thread each, for a map of several (tiling). "
        "1 holds up when the CPU is shared: measured as fast as 2 on a quiet 2-core machine and "
        "2-40x faster under competing load (bench/bench_node_load.py). Raise it on a machine "
        "the node has to itself. Applies from the next cloud.",
        int_range=(1, 1024),
    ),
    ParamSpec(
        "worker_nice",
        0,
        "Scheduling niceness of the inference worker thread (Linux, per thread; threads it "
        "starts inherit it), the rest of the node untouched. Negative values give inference "
        "precedence over the robot's other processes on a shared CPU (bench/bench_node_load.py "
        "--nice) and need CAP_SYS_NICE or an RLIMIT_NICE allowance (limits.conf `nice`); when "
        "refused the node logs a warning and runs at the niceness it inherited (diagnostics: "
        "worker_nice). 0 leaves the scheduling as it is.",
        read_only=True,
        int_range=(-20, 19),
    ),
    ParamSpec(
        "test_time_views",
        0,
        "Copies of each cloud, turned about z in equal steps, whose class and offset "
        "predictions are averaged (the checkpoint card's inference.test_time_views). Each view "
        "is one more backbone pass: 4 views cost ~3.7x the time of 1 (bench/bench_pipeline.py "
        "--inference test_time_views=4). 0: the card's setting; 1: the cloud alone, fastest.",
        read_only=True,
        int_range=(0, 16),
    ),
    ParamSpec(
        "class_geometry",
        "",
        "Where an instance's class comes from (the checkpoint card's "
        "inference.class_geometry): 'alone', its size, height above the floor and point spread "
        "(the card's prior, fitted on the training scans; the shipped DyCo3D's setting); "
        "'combined', that prior times the mask's semantic class probabilities; 'off', the "
        "semantic head alone. '': the card's setting. 'alone' and 'combined' need a card "
        "with a prior (python -m dyco_training.class_geometry).",
        read_only=True,
        check=_one_of(("", "off", "alone", "combined")),
        constraints="'' | off | alone | combined",
    ),
    ParamSpec(
        "qos.reliability",
        "reliable",
        "Input subscription reliability (reliable or best_effort).",
        read_only=True,
        check=_one_of(RELIABILITY),
        constraints="reliable | best_effort",
    ),
    ParamSpec(
        "qos.durability",
        "volatile",
        "Input subscription durability; transient_local also receives a latched map.",
        read_only=True,
        check=_one_of(DURABILITY),
        constraints="volatile | transient_local",
    ),
    ParamSpec(
        "qos.depth",
        5,
        "Input subscription history depth (the worker keeps only the newest cloud).",
        True,
        int_range=(1, 100),
    ),
    ParamSpec(
        "score_threshold",
        0.1,
        "Instances scoring lower are not published (applied after the model's own threshold).",
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "min_instance_points",
        50,
        "Instances with fewer points are not published.",
        int_range=(1, 1_000_000),
    ),
    ParamSpec(
        "max_points",
        2_000_000,
        "Clouds with more points are rejected (bounds memory and latency).",
        int_range=(1, 100_000_000),
    ),
    ParamSpec(
        "input_frame",
        "",
        "Frame the static transform applies to; clouds in another frame are rejected. "
        "Empty: any frame.",
    ),
    ParamSpec(
        "target_frame",
        "",
        "Frame of the outputs. Empty: the input frame, untransformed.",
    ),
    ParamSpec(
        "static_transform.translation",
        [0.0, 0.0, 0.0],
        "Translation (m) of the input frame in the target frame (x, y, z).",
        check=_check_vector(3),
    ),
    ParamSpec(
        "static_transform.rotation",
        [0.0, 0.0, 0.0, 1.0],
        "Rotation of the input frame in the target frame as a unit quaternion (x, y, z, w).",
        check=_check_rotation,
    ),
    ParamSpec(
        "outputs",
        list(OUTPUTS),
        f"Outputs to publish, any of {list(OUTPUTS)}.",
        read_only=True,
        check=_check_outputs,
    ),
    ParamSpec(
        "publish_point_indices",
        False,
        "Fill dyco_msgs/Instance.point_indices (row indices into the labelled cloud).",
    ),
    ParamSpec(
        "diagnostics_period",
        1.0,
        "Seconds between diagnostics messages.",
        read_only=True,
        float_range=(0.1, 60.0),
    ),
    ParamSpec(
        "roi.mode",
        "none",
        "Region of interest: none (the whole cloud), box (roi.box_min..roi.box_max) or radius "
        "(within roi.radius of roi.center in x-y, any height). Points outside get label -1 "
        "and no instance. Coordinates are in the output frame.",
        check=_one_of(ROI_MODES),
        constraints="none | box | radius",
    ),
    ParamSpec(
        "roi.box_min",
        [-5.0, -5.0, -2.0],
        "Lower corner (x, y, z, m) of the box region of interest.",
        check=_check_vector(3),
    ),
    ParamSpec(
        "roi.box_max",
        [5.0, 5.0, 3.0],
        "Upper corner (x, y, z, m) of the box region of interest.",
        check=_check_vector(3),
    ),
    ParamSpec(
        "roi.center",
        [0.0, 0.0],
        "Centre (x, y, m) of the radius region of interest, e.g. the robot's position.",
        check=_check_vector(2),
    ),
    ParamSpec(
        "roi.radius",
        5.0,
        "Radius (m, in x-y) of the radius region of interest.",
        float_range=(0.01, 100_000.0),
    ),
)


def _object_map_specs() -> tuple[ParamSpec, ...]:
    """objects.*: the object map switch, then ObjectMapConfig's fields with their ranges."""
    specs = [
        ParamSpec(
            "objects.enabled",
            True,
            "Keep a persistent object map: object ids on instances and in the labelled cloud, "
            "the latched segmentation/objects topic and the query/reset services.",
            read_only=True,
        )
    ]
    for spec in dataclasses.fields(ObjectMapConfig):
        bounds = spec.metadata["range"]
        is_int = isinstance(spec.default, int)
        specs.append(
            ParamSpec(
                f"objects.{spec.name}",
                spec.default,
                spec.metadata["doc"][:1].upper() + spec.metadata["doc"][1:] + ".",
                read_only=spec.name == "voxel_size",  # stored voxels are keyed by it
                float_range=None if is_int else (float(bounds[0]), float(bounds[1])),
                int_range=(int(bounds[0]), int(bounds[1])) if is_int else None,
            )
        )
    return tuple(specs)


SPECS += _object_map_specs()
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


def check_value(name: str, value: Any) -> str | None:
    """The reason `value` is invalid for parameter `name`, or None when it is fine."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None
    if spec.float_range and not spec.float_range[0] <= value <= spec.float_range[1]:
        return f"must lie in [{spec.float_range[0]}, {spec.float_range[1]}], got {value}"
    if spec.int_range and not spec.int_range[0] <= value <= spec.int_range[1]:
        return f"must lie in [{spec.int_range[0]}, {spec.int_range[1]}], got {value}"
    return spec.check(value) if spec.check else None


@dataclass(frozen=True)
class NodeSettings:
    """A validated snapshot of the parameters (the worker reads one snapshot per cloud)."""

    checkpoint: str
    device: str
    reliability: str
    durability: str
    depth: int
    score_threshold: float
    min_instance_points: int
    max_points: int
    input_frame: str
    target_frame: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    outputs: tuple[str, ...]
    publish_point_indices: bool
    diagnostics_period: float
    roi: RegionOfInterest | None = None  # None: the whole cloud
    objects: ObjectMapConfig | None = None  # None: object map disabled
    decoder: str = ""  # the decoder the checkpoint must hold ("": any)
    threads: int = 1  # torch intra-op threads of the worker
    worker_nice: int = 0  # the worker thread's scheduling niceness
    test_time_views: int = 0  # 0: the checkpoint card's inference.test_time_views
    class_geometry: str = ""  # "": the checkpoint card's inference.class_geometry

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> NodeSettings:
        for name, value in values.items():
            reason = check_value(name, value)
            if reason:
                raise ValueError(f"parameter '{name}' {reason}")
        get = values.__getitem__
        return cls(
            checkpoint=str(get("checkpoint")).strip()
            or shipped_checkpoint(str(values.get("decoder", ""))),
            device=str(get("device")),
            reliability=str(get("qos.reliability")),
            durability=str(get("qos.durability")),
            depth=int(get("qos.depth")),
            score_threshold=float(get("score_threshold")),
            min_instance_points=int(get("min_instance_points")),
            max_points=int(get("max_points")),
            input_frame=str(get("input_frame")),
            target_frame=str(get("target_frame")),
            translation=tuple(float(v) for v in get("static_transform.translation")),
            rotation=tuple(float(v) for v in get("static_transform.rotation")),
            outputs=tuple(get("outputs")),
            publish_point_indices=bool(get("publish_point_indices")),
            diagnostics_period=float(get("diagnostics_period")),
            roi=_region_of_interest(values),
            objects=_object_map_config(values),
            decoder=str(values.get("decoder", "")),
            threads=int(values.get("threads", 1)),
            worker_nice=int(values.get("worker_nice", 0)),
            test_time_views=int(values.get("test_time_views", 0)),
            class_geometry=str(values.get("class_geometry", "")),
        )

    @property
    def inference(self) -> dict[str, Any] | None:
        """The card's inference settings these parameters replace (None: none)."""
        changes = {
            "test_time_views": self.test_time_views or None,
            "class_geometry": self.class_geometry or None,
        }
        return {key: value for key, value in changes.items() if value is not None} or None

    @property
    def transforms(self) -> bool:
        """True when clouds are moved into a target frame (a non-identity static transform)."""
        identity = self.translation == (0.0, 0.0, 0.0) and self.rotation == (0.0, 0.0, 0.0, 1.0)
        return bool(self.target_frame) and not identity


def _object_map_config(values: dict[str, Any]) -> ObjectMapConfig | None:
    if not values.get("objects.enabled", True):
        return None
    fields = {f.name for f in dataclasses.fields(ObjectMapConfig)}
    given = {k[len("objects.") :]: v for k, v in values.items() if k.startswith("objects.")}
    return ObjectMapConfig.from_dict({k: v for k, v in given.items() if k in fields})


def _region_of_interest(values: dict[str, Any]) -> RegionOfInterest | None:
    """roi.* as a RegionOfInterest (ValueError naming the problem, e.g. box_min > box_max)."""
    mode = values.get("roi.mode", "none")
    if mode == "box":
        return RegionOfInterest.box(values["roi.box_min"], values["roi.box_max"])
    if mode == "radius":
        return RegionOfInterest.around(values["roi.center"], float(values["roi.radius"]))
    return None
