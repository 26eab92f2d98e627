"""Starting segment_node as its own process, the way launch_ros does (console script +
`--ros-args`), for dyco-replay, dyco-demo, the bench and tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from dyco_perception.ros.resources import package_file

PLAIN_NODE = "segment_node"
MANAGED_NODE = "managed_segment_node"
# The Fast DDS profile launch/segment.launch.py gives the node (a shared-memory segment large
# enough for big labelled clouds, so best-effort readers receive them): see that file.
DDS_PROFILE = "config/fastdds_large_data.xml"
DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def node_executable(name: str = PLAIN_NODE) -> str:
    """A node's console script: on PATH, else in the package's lib directory."""
    found = shutil.which(name)
    if found:
        return found
    from ament_index_python.packages import get_package_prefix

    return str(Path(get_package_prefix("dyco_perception")) / "lib" / "dyco_perception" / name)


def node_environment(threads: int | None = None, dds_profile: str | None = DDS_PROFILE) -> dict:
    """This process's environment plus what the launch file sets: the DDS profile (unless one
    is already chosen; None: none) and optionally the torch thread count."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if dds_profile and DDS_PROFILE_VARIABLE not in env:
        env[DDS_PROFILE_VARIABLE] = str(package_file(dds_profile))
    return env


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_format(v) for v in value) + "]"
    if value == "":
        return "''"  # `-p name:=` alone does not parse
    return str(value)


def node_command(
    params_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    remaps: dict[str, str] | None = None,
    executable: str = PLAIN_NODE,
    namespace: str | None = None,
) -> list[str]:
    """The node's command line; `namespace` as launch's `namespace:=` gives it (`__ns`)."""
    command = [node_executable(executable), "--ros-args"]
    if namespace:
        command += ["-r", f"__ns:=/{namespace.strip('/')}"]
    if params_file is not None:
        command += ["--params-file", str(params_file)]
    for name, value in (overrides or {}).items():
        command += ["-p", f"{name}:={_format(value)}"]
    for source, target in (remaps or {}).items():
        command += ["-r", f"{source}:={target}"]
    return command


def start_node(
    overrides: dict[str, Any] | None = None,
    remaps: dict[str, str] | None = None,
    params_file: str | Path | None = None,
    log_path: str | Path | None = None,
    threads: int | None = None,
    executable: str = PLAIN_NODE,
    dds_profile: str | None = DDS_PROFILE,
    namespace: str | None = None,
) -> subprocess.Popen:
    """Start a node (segment_node, or MANAGED_NODE) as launch/segment.launch.py does, with
    config/segment.yaml (or params_file) and the overrides; its output goes to log_path (or is
    inherited); `namespace` is launch's `namespace:=` argument; `threads` sets the `threads`
    parameter (unless the overrides do) and OMP_NUM_THREADS."""
    params_file = params_file or package_file("config/segment.yaml")
    if threads is not None:
        overrides = {"threads": threads, **(overrides or {})}
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        node_command(params_file, overrides, remaps, executable, namespace),
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        env=node_environment(threads, dds_profile),
    )


def stop_node(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGINT (a clean rclpy shutdown), then SIGKILL if it does not exit."""
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
