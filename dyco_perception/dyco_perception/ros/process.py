"""Starting segment_node as its own process, the way launch_ros does (console script +
`--ros-args`), for dyco-replay, dyco-demo, the bench and tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from dyco_perception.ros.resources import package_file


def node_executable() -> str:
    """The segment_node console script: on PATH, else in the package's lib directory."""
    found = shutil.which("segment_node")
    if found:
        return found
    from ament_index_python.packages import get_package_prefix

    return str(
        Path(get_package_prefix("dyco_perception")) / "lib" / "dyco_perception" / "segment_node"
    )


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def node_command(
    params_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    remaps: dict[str, str] | None = None,
) -> list[str]:
    command = [node_executable(), "--ros-args"]
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
) -> subprocess.Popen:
    """Start segment_node with config/segment.yaml (or params_file) and the overrides; its
    output goes to log_path (or is inherited)."""
    params_file = params_file or package_file("config/segment.yaml")
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        node_command(params_file, overrides, remaps),
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        env=env,
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
