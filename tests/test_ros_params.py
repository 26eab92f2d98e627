"""The node's parameter table and settings (ros/params.py), without a node."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from dyco_perception.ros.params import SPECS, NodeSettings, check_value


def _values(**changes: Any) -> dict[str, Any]:
    """Every parameter at its default, `changes` applied (dots as double underscores)."""
    values = {spec.name: spec.default for spec in SPECS}
    values.update({name.replace("__", "."): value for name, value in changes.items()})
    return values


@pytest.mark.parametrize(
    ("name", "ends"), [("score_threshold", (0.0, 1.0)), ("roi.radius", (0.01, 100_000.0))]
)
def test_both_ends_of_a_float_range_are_valid(name: str, ends: tuple[float, float]) -> None:
    assert [check_value(name, value) for value in ends] == [None, None]
    assert check_value(name, ends[1] * 1.01) and check_value(name, ends[0] - 0.01)


def test_vectors_take_exactly_their_number_of_values() -> None:
    assert check_value("static_transform.translation", [0.0, 0.0, 0.0]) is None
    for values in ([0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, float("nan")]):
        assert "3 finite numbers" in check_value("static_transform.translation", values)


def test_rotation_must_be_a_unit_quaternion_to_within_a_thousandth() -> None:
    assert check_value("static_transform.rotation", [0.0, 0.0, 0.0, 1.0009]) is None
    assert "unit quaternion" in check_value("static_transform.rotation", [0.0, 0.0, 0.0, 1.01])


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
