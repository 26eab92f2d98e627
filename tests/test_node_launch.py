"""launch/segment.launch.py: launch is not installable here, so its structure is checked with
ast, and the command it amounts to is run (console script + the same parameters)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from dyco_perception.ros.params import SPECS
from dyco_perception.tools.process import (
    DDS_PROFILE,
    DDS_PROFILE_VARIABLE,
    MANAGED_NODE,
    PLAIN_NODE,
)

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


def test_launch_file_declares_arguments_and_starts_either_node() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in functions
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    expected = {"config", "checkpoint", "input_topic", "device", "use_sim_time", "managed"}
    assert expected | {"autostart", "dds_profile", "set_dds_profile", "decoder"} <= declared
    # Without a checkpoint argument, decoder:=NAME runs that method's shipped checkpoint: the
    # node loads it for an empty checkpoint (tests/test_node_checkpoint.py), and checks the name.
    defaults = {
        ast.literal_eval(c.args[0]): ast.literal_eval(_keywords(c)["default_value"])
        for c in _calls(tree, "DeclareLaunchArgument")
        if ast.literal_eval(c.args[0]) in ("checkpoint", "decoder")
    }
    assert defaults == {"checkpoint": "", "decoder": ""}
    passed = _dict_assigned(tree, "overrides")
    for name in ("checkpoint", "decoder"):  # strings even when empty (no YAML guessing)
        value = ast.unparse(passed[name])
        assert value == f"ParameterValue(LaunchConfiguration('{name}'), value_type=str)", value
    used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"undeclared launch arguments used: {used - declared}"
    options = _dict_assigned(tree, "node_options")
    assert ast.literal_eval(options["package"]) == "dyco_perception"
    assert ast.literal_eval(options["name"]) == "segment_node"  # lifecycle services live there
    remap = options["remappings"].elts[0]
    assert ast.literal_eval(remap.elts[0]) == "cloud_in"
    overridden = set(_dict_assigned(tree, "overrides"))
    known = {spec.name for spec in SPECS} | {"use_sim_time"}
    assert overridden <= known, f"launch overrides unknown parameters {overridden - known}"
    # One of the two nodes runs, chosen by `managed`, each with the shared options.
    [plain] = _calls(tree, "Node")
    [managed] = _calls(tree, "LifecycleNode")
    executables = {}
    for call, condition in ((plain, "UnlessCondition"), (managed, "IfCondition")):
        kwargs = _keywords(call)
        assert ast.unparse(kwargs[None]) == "node_options"  # **node_options
        assert kwargs["condition"].func.id == condition
        assert ast.unparse(kwargs["condition"].args[0]) == "managed"
        executables[condition] = ast.literal_eval(kwargs["executable"])
    assert executables == {"UnlessCondition": PLAIN_NODE, "IfCondition": MANAGED_NODE}

    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from ament_index_python.packages import get_package_prefix

    lib_dir = Path(get_package_prefix("dyco_perception")) / "lib" / "dyco_perception"
    for executable in executables.values():
        assert os.access(lib_dir / executable, os.X_OK), f"{executable} not in {lib_dir}"


def test_launch_file_puts_the_node_in_the_namespace_argument() -> None:
    """namespace:=NAME moves the node with its topics, services and parameters under /NAME, so
    that two launches (e.g. decoder:=dyco3d namespace:=dyco3d and decoder:=isbnet
    namespace:=isbnet) run side by side (tests/test_node_side_by_side.py); the default, none,
    keeps the topics where they were."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    [argument] = [
        c
        for c in _calls(tree, "DeclareLaunchArgument")
        if ast.literal_eval(c.args[0]) == "namespace"
    ]
    assert ast.literal_eval(_keywords(argument)["default_value"]) == ""
    options = _dict_assigned(tree, "node_options")
    assert ast.unparse(options["namespace"]) == "LaunchConfiguration('namespace')"
    assert ast.literal_eval(options["name"]) == "segment_node"  # one name in every namespace


def test_launch_file_gives_the_node_the_large_data_dds_profile() -> None:
    """The variable and file the launch file sets are those start_node (tests, replay) sets,
    so the best-effort test (test_node_qos.py) covers what the launch file does."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    constants = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
    [setter] = _calls(tree, "SetEnvironmentVariable")
    assert ast.literal_eval(constants[setter.args[0].id]) == DDS_PROFILE_VARIABLE
    assert ast.literal_eval(setter.args[1].args[0]) == "dds_profile"
    condition = _keywords(setter)["condition"]
    assert ast.unparse(condition) == "IfCondition(LaunchConfiguration('set_dds_profile'))"
    [argument] = [
        c
        for c in _calls(tree, "DeclareLaunchArgument")
        if ast.literal_eval(c.args[0]) == "dds_profile"
    ]
    default = _keywords(argument)["default_value"]
    assert default.func.id == "EnvironmentVariable"  # a profile the user chose wins
    path_parts = {n.value for n in ast.walk(default) if isinstance(n, ast.Constant)}
    assert set(Path(DDS_PROFILE).parts) <= path_parts, f"launch default is not {DDS_PROFILE}"
    assert (REPO_ROOT / DDS_PROFILE).is_file()

    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from ament_index_python.packages import get_package_share_directory

    installed = Path(get_package_share_directory("dyco_perception")) / DDS_PROFILE
    assert installed.is_file(), f"{DDS_PROFILE} is not installed into the package share"


def test_managed_autostart_configures_then_activates_only_after_configuring() -> None:
    tree = ast.parse(LAUNCH_FILE.read_text())
    transitions = [_keywords(c)["transition_id"] for c in _calls(tree, "ChangeState")]
    assert sorted(ast.unparse(t) for t in transitions) == ["transition"]  # one helper makes both
    changes = [ast.unparse(c.args[0]) for c in _calls(tree, "change")]
    assert sorted(changes) == ["Transition.TRANSITION_ACTIVATE", "Transition.TRANSITION_CONFIGURE"]
    [handler] = _calls(tree, "OnStateTransition")
    kwargs = _keywords(handler)
    states = (ast.literal_eval(kwargs["start_state"]), ast.literal_eval(kwargs["goal_state"]))
    assert states == ("configuring", "inactive"), "activate must not follow every deactivate"
    [activate] = kwargs["entities"].elts
    assert ast.unparse(activate.args[0]) == "Transition.TRANSITION_ACTIVATE"
    autostart = _function(tree, "_autostart")
    arguments = {ast.literal_eval(c.args[0]) for c in _calls(autostart, "LaunchConfiguration")}
    assert arguments == {"autostart"}
    calls = [c for c in ast.walk(autostart) if isinstance(c, ast.Call)]
    conditions = {
        ast.unparse(kw.value) for c in calls for kw in c.keywords if kw.arg == "condition"
    }
    assert conditions == {"wanted"}, "both the configure and the activate need autostart"


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    [function] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    return function


def _dict_assigned(tree: ast.AST, name: str) -> dict[str, ast.expr]:
    """The {literal key: value node} of the dict literal assigned to `name`."""
    [assign] = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == name
    ]
    assert isinstance(assign.value, ast.Dict)
    return {
        ast.literal_eval(k): v for k, v in zip(assign.value.keys, assign.value.values, strict=True)
    }


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
    from dyco_perception.tools.process import start_node, stop_node

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


def test_node_command_is_read_by_ros_as_the_parameters_remaps_and_namespace_given() -> None:
    """ROS's own argument parser (rcl, through rclpy) reads node_command's line: every value
    type with its type, the empty string, the remap's direction, the namespace without its
    slashes, and the params file beneath the overrides."""
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from dyco_perception.tools.process import node_command

    overrides = {"on": True, "off": False, "values": [0.5, 1.5], "names": ["a", "b"], "none": ""}
    overrides |= {"count": 3, "ratio": 0.25, "device": "cpu"}
    command = node_command(
        REPO_ROOT / "config" / "segment.yaml",
        overrides,
        {"cloud_in": "/elsewhere"},
        namespace="/ns/",
    )
    assert Path(command[0]).name == PLAIN_NODE and command[1] == "--ros-args"
    context = rclpy.Context()
    rclpy.init(args=command, context=context)
    try:
        node = rclpy.create_node(
            PLAIN_NODE, context=context, automatically_declare_parameters_from_overrides=True
        )
        assert node.get_fully_qualified_name() == f"/ns/{PLAIN_NODE}"
        assert node.resolve_topic_name("cloud_in") == "/elsewhere"
        for name, value in overrides.items():
            got = node.get_parameter(name).value
            assert (got, type(got)) == (value, type(value)), name
        assert node.get_parameter("threads").value == 1  # from the params file
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_node_environment_sets_the_dds_profile_unless_one_is_chosen(monkeypatch) -> None:
    from dyco_perception.tools.process import node_environment

    monkeypatch.delenv(DDS_PROFILE_VARIABLE, raising=False)
    env = node_environment(threads=3)
    assert env["OMP_NUM_THREADS"] == "3" and Path(env[DDS_PROFILE_VARIABLE]).is_file()
    assert Path(env[DDS_PROFILE_VARIABLE]).parts[-2:] == Path(DDS_PROFILE).parts[-2:]
    assert DDS_PROFILE_VARIABLE not in node_environment(dds_profile=None)
    monkeypatch.setenv(DDS_PROFILE_VARIABLE, "/chosen/profile.xml")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    env = node_environment()
    assert env[DDS_PROFILE_VARIABLE] == "/chosen/profile.xml" and env["OMP_NUM_THREADS"] == "5"


def test_start_node_passes_its_params_file_and_lets_an_explicit_threads_override_win(
    tmp_path: Path,
) -> None:
    """start_node's command line, run by a stand-in executable from PATH (`true`): the params
    file asked for, and a `threads` override wins over the threads argument."""
    from dyco_perception.tools.process import start_node

    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters: {}\n")
    process = start_node(
        {"threads": 3}, params_file=params, threads=2, executable="true", log_path=tmp_path / "log"
    )
    assert process.wait(timeout=30) == 0
    args = list(process.args)
    assert args[args.index("--params-file") + 1] == str(params)
    assert [a for a in args if a.startswith("threads:=")] == ["threads:=3"]
