"""The node's parameter table and settings (ros/params.py), without a node."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from dyco_perception.ros.params import SPECS, SPECS_BY_NAME, NodeSettings, check_value


def _values(**changes: Any) -> dict[str, Any]:
    """Every parameter at its default, `changes` applied (dots as double underscores)."""
    values = {spec.name: spec.default for spec in SPECS}
    values.update({name.replace("__", "."): value for name, value in changes.items()})
    return values


@pytest.mark.parametrize(
    ("name", "ends"),
    [
        ("score_threshold", (0.0, 1.0)),
        ("roi.radius", (0.01, 100_000.0)),
        ("diagnostics_period", (0.1, 60.0)),
    ],
)
def test_both_ends_of_a_float_range_are_valid(name: str, ends: tuple[float, float]) -> None:
    assert [check_value(name, value) for value in ends] == [None, None]
    assert check_value(name, ends[1] * 1.01) and check_value(name, ends[0] - 0.01)


def test_vectors_take_exactly_their_number_of_values() -> None:
    assert check_value("static_transform.translation", [0.0, 0.0, 0.0]) is None
    bad = ([0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, float("nan")], [0.0, float("inf"), 0.0])
    for values in bad:
        assert "3 finite numbers" in check_value("static_transform.translation", values)


def test_rotation_must_be_a_unit_quaternion_to_within_a_thousandth() -> None:
    assert check_value("static_transform.rotation", [0.0, 0.0, 0.0, 1.0009]) is None
    assert "unit quaternion" in check_value("static_transform.rotation", [0.0, 0.0, 0.0, 1.01])
    assert "unit quaternion" in check_value("static_transform.rotation", [0.0, 0.0, 0.0, 1.002])


def test_clouds_are_transformed_only_into_a_named_target_frame_by_a_non_identity() -> None:
    moved = {"static_transform__translation": [1.0, 0.0, 0.0]}
    assert NodeSettings.from_values(_values(target_frame="map", **moved)).transforms
    assert not NodeSettings.from_values(_values(**moved)).transforms  # no target frame
    assert not NodeSettings.from_values(_values(target_frame="map")).transforms  # identity


def test_region_of_interest_parameters_build_the_region() -> None:
    xyz = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.5, 0.5, 2.5], [3.0, 3.0, 0.0]])
    box = NodeSettings.from_values(
        _values(roi__mode="box", roi__box_min=[-1.0, -1.0, -1.0], roi__box_max=[1.0, 1.0, 3.0])
    ).roi
    assert box.contains(xyz).tolist() == [True, False, True, False]
    radius = NodeSettings.from_values(
        _values(roi__mode="radius", roi__center=[1.0, 0.0], roi__radius=0.75)
    ).roi
    assert radius.contains(xyz).tolist() == [False, True, True, False]
    assert NodeSettings.from_values(_values()).roi is None  # roi.mode none: the whole cloud


@pytest.mark.parametrize(
    ("name", "ends"),
    [
        ("threads", (1, 1024)),
        ("worker_nice", (-20, 19)),
        ("test_time_views", (0, 16)),
        ("qos.depth", (1, 100)),
        ("min_instance_points", (1, 1_000_000)),
        ("max_points", (1, 100_000_000)),
        ("objects.confirm_after", (1, 100)),
        ("objects.coverage_points", (1_000, 100_000_000)),
    ],
)
def test_both_ends_of_an_int_range_are_valid_and_one_past_is_not(
    name: str, ends: tuple[int, int]
) -> None:
    assert [check_value(name, value) for value in ends] == [None, None]
    assert check_value(name, ends[0] - 1) and check_value(name, ends[1] + 1)


def test_object_map_fields_keep_their_type_in_the_range_kind() -> None:
    """objects.*: int fields get an int range (a ROS integer parameter), float fields a float
    range, each with ObjectMapConfig's bounds."""
    confirm, overlap = SPECS_BY_NAME["objects.confirm_after"], SPECS_BY_NAME["objects.min_overlap"]
    assert (confirm.int_range, confirm.float_range) == ((1, 100), None)
    assert (overlap.int_range, overlap.float_range) == (None, (0.01, 1.0))


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"], ["cpux", "cuda:", "cuda:a"]),
        ("class_geometry", ["", "off", "alone", "combined"], ["both", "Off"]),
        ("roi.mode", ["none", "box", "radius"], ["circle"]),
        ("qos.reliability", ["reliable", "best_effort"], ["volatile"]),
        ("qos.durability", ["volatile", "transient_local"], ["reliable"]),
        ("outputs", [[], ["cloud"], ["diagnostics", "class_map"]], [["cloud", "mesh"], ["mesh"]]),
    ],
)
def test_choice_parameters_take_exactly_their_choices(name: str, good: list, bad: list) -> None:
    assert [check_value(name, value) for value in good] == [None] * len(good)
    assert all(check_value(name, value) for value in bad)


def test_read_only_parameters_are_those_a_restart_needs() -> None:
    """Model, device, QoS, publishers and the object voxel size; the rest change at run time."""
    assert {spec.name for spec in SPECS if spec.read_only} == {
        "checkpoint",
        "device",
        "worker_nice",
        "test_time_views",
        "class_geometry",
        "qos.reliability",
        "qos.durability",
        "qos.depth",
        "outputs",
        "diagnostics_period",
        "objects.enabled",
        "objects.voxel_size",
    }


def test_parameters_outside_the_table_are_not_judged() -> None:
    """rclpy's own parameters (use_sim_time) pass through check_value untouched."""
    assert check_value("use_sim_time", True) is None


def test_an_invalid_value_fails_the_settings_naming_the_parameter() -> None:
    with pytest.raises(ValueError, match=r"parameter 'qos\.depth' must lie in"):
        NodeSettings.from_values(_values(qos__depth=0))


def test_each_value_reaches_its_own_setting() -> None:
    settings = NodeSettings.from_values(
        _values(
            qos__reliability="best_effort",
            qos__durability="transient_local",
            min_instance_points=7,
            max_points=1234,
            decoder="pointgroup",
            checkpoint="",
        )
    )
    assert (settings.reliability, settings.durability) == ("best_effort", "transient_local")
    assert (settings.min_instance_points, settings.max_points) == (7, 1234)
    assert settings.decoder == "pointgroup"
    assert settings.checkpoint == "checkpoints/pointgroup_scannet_m16.safetensors"
    blank = NodeSettings.from_values(_values(checkpoint="  "))  # blank: the shipped default
    assert blank.checkpoint == "checkpoints/dyco3d_scannet_m16.safetensors"


def test_inference_overrides_only_what_is_set() -> None:
    """0 views and '' class geometry leave the card's settings: no override at all."""
    assert NodeSettings.from_values(_values()).inference is None
    views = NodeSettings.from_values(_values(test_time_views=4)).inference
    assert views == {"test_time_views": 4}
    both = NodeSettings.from_values(_values(test_time_views=2, class_geometry="off")).inference
    assert both == {"test_time_views": 2, "class_geometry": "off"}


def test_object_parameters_reach_the_object_map_config() -> None:
    """objects.* values land on ObjectMapConfig's fields; without objects.enabled the map is on."""
    values = _values(objects__retire_after=5, objects__confirm_after=4)
    objects = NodeSettings.from_values(values).objects
    assert (objects.retire_after, objects.confirm_after, objects.voxel_size) == (5, 4, 0.1)
    del values["objects.enabled"]
    assert NodeSettings.from_values(values).objects.retire_after == 5


def test_settings_left_out_take_their_parameter_default() -> None:
    """The optional keys (decoder, threads, worker_nice, test_time_views, class_geometry) may
    be missing: each then has its table default."""
    optional = ("decoder", "threads", "worker_nice", "test_time_views", "class_geometry")
    values = {name: value for name, value in _values().items() if name not in optional}
    settings = NodeSettings.from_values(values)
    got = {name: getattr(settings, name) for name in optional}
    assert got == {name: SPECS_BY_NAME[name].default for name in optional}
