# Sourced (not run): the environment the ROS 2 wheels need when no system ROS 2 is sourced.
# The venv is the ROS prefix: its share/ament_index lists the wheel packages.
_ros_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ros_env_venv="$_ros_env_root/.venv"
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$_ros_env_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$_ros_env_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
fi
export PATH="$_ros_env_venv/bin:$PATH"
unset _ros_env_root _ros_env_venv
