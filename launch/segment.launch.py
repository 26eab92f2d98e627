"""Launch segment_node with config/segment.yaml plus command-line overrides.

ros2 launch dyco_perception segment.launch.py input_topic:=/map_cloud device:=cuda
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

SHARE = Path(get_package_share_directory("dyco_perception"))


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "config",
            default_value=str(SHARE / "config" / "segment.yaml"),
            description="Node parameter file (ros__parameters YAML).",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="checkpoints/dyco3d_scannet_m16.safetensors",
            description="Model checkpoint (.safetensors).",
        ),
        DeclareLaunchArgument(
            "input_topic", default_value="cloud_in", description="PointCloud2 topic to segment."
        ),
        DeclareLaunchArgument(
            "device", default_value="auto", description="auto | cpu | cuda | cuda:N"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use the /clock topic."
        ),
    ]
    overrides = {
        "checkpoint": LaunchConfiguration("checkpoint"),
        "device": LaunchConfiguration("device"),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    node = Node(
        package="dyco_perception",
        executable="segment_node",
        name="segment_node",
        output="screen",
        parameters=[LaunchConfiguration("config"), overrides],
        remappings=[("cloud_in", LaunchConfiguration("input_topic"))],
    )
    return LaunchDescription([*arguments, node])
