# Usage: source scripts/activate.sh   (after `make setup`)
# Gives this shell the venv, the ROS 2 environment and the built workspace overlay.
_dyco_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$_dyco_root/ros2_ws/install/setup.bash" ]; then
  echo "dyco_perception: workspace not built yet; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck source=scripts/ros_env.sh
source "$_dyco_root/scripts/ros_env.sh"
source "$_dyco_root/.venv/bin/activate"
source "$_dyco_root/ros2_ws/install/setup.bash"
# The package's console scripts (segment_node, dyco-replay, ...) live where `ros2 run` looks.
export PATH="$_dyco_root/ros2_ws/install/dyco_perception/lib/dyco_perception:$PATH"
unset _dyco_root
