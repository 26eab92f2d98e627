# Puts the package's tools (segment_node, dyco-replay, dyco-make-bag, dyco-demo) on PATH when
# install/setup.bash is sourced; they stay in lib/dyco_perception, where launch_ros looks.
_colcon_prepend_unique_value PATH "$COLCON_CURRENT_PREFIX/lib/dyco_perception"
