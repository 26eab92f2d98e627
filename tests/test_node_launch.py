"""launch/segment.launch.py: launch is not installable here, so its structure is checked with
ast, and the command it amounts to is run (console script + the same parameters)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from dyco_perception.ros.params import SPECS

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "segment.launch.py"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name
    ]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {kw.arg: kw.value for kw in call.keywords}


def test_launch_file_declares_arguments_and_starts_the_node() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in functions
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"config", "checkpoint", "input_topic", "device", "use_sim_time"} <= declared
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"undeclared launch arguments used: {used - declared}"
    [node] = _calls(tree, "Node")
    kwargs = _keywords(node)
    assert ast.literal_eval(kwargs["package"]) == "dyco_perception"
    executable = ast.literal_eval(kwargs["executable"])
    remap = kwargs["remappings"].elts[0]
    assert ast.literal_eval(remap.elts[0]) == "cloud_in"
    overridden = {ast.literal_eval(k) for k in _overrides(tree).keys}
    known = {spec.name for spec in SPECS} | {"use_sim_time"}
    assert overridden <= known, f"launch overrides unknown parameters {overridden - known}"

    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from ament_index_python.packages import get_package_prefix

    lib_dir = Path(get_package_prefix("dyco_perception")) / "lib" / "dyco_perception"
    assert os.access(lib_dir / executable, os.X_OK), f"{executable} not in {lib_dir}"


def _overrides(tree: ast.AST) -> ast.Dict:
    [assign] = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "overrides"
    ]
    assert isinstance(assign.value, ast.Dict)
    return assign.value


def test_config_file_is_ros_parameters_yaml_with_every_parameter() -> None:
    import yaml

    data = yaml.safe_load((REPO_ROOT / "config" / "segment.yaml").read_text())
    params = data["/**"]["ros__parameters"]

    def flatten(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    flat = flatten(params)
    assert set(flat) == {spec.name for spec in SPECS}
    for spec in SPECS:
        assert flat[spec.name] == spec.default, f"{spec.name}: yaml and code defaults differ"


def test_node_starts_like_launch_starts_it_and_stops_on_sigint(tmp_path: Path) -> None:
    """The launch file's command: params file + checkpoint override + remapped input."""
    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from dyco_perception.checkpoint import write_random_checkpoint
    from dyco_perception.ros.process import start_node, stop_node

    from dyco_perception.config import load_model_config

    cfg = load_model_config(REPO_ROOT / "config" / "model" / "tiny_test.yaml")
    checkpoint = write_random_checkpoint(tmp_path / "tiny.safetensors", cfg)
    log = tmp_path / "node.log"
    process = start_node(
        {"checkpoint": str(checkpoint), "device": "cpu"},
        remaps={"cloud_in": "/launch_test/points"},
        log_path=log,
    )
    try:
        deadline = 90
        import time

        start = time.monotonic()
        while "ready" not in log.read_text() and time.monotonic() - start < deadline:
            assert process.poll() is None, f"node exited: {log.read_text()}"
            time.sleep(0.2)
        text = log.read_text()
        assert "ready" in text and "/launch_test/points" in text, text
    finally:
        assert stop_node(process) == 0, log.read_text()
