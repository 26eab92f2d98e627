"""Launch segment_node, or its managed variant, with config/segment.yaml and overrides.

ros2 launch dyco_perception segment.launch.py input_topic:=/map_cloud device:=cuda
ros2 launch dyco_perception segment.launch.py decoder:=isbnet   # another method's checkpoint
ros2 launch dyco_perception segment.launch.py managed:=true                  # lifecycle node
ros2 launch dyco_perception segment.launch.py managed:=true autostart:=false  # a manager drives it

Two nodes side by side (e.g. to compare methods): one namespace each, one shared input.
ros2 launch dyco_perception segment.launch.py decoder:=dyco3d namespace:=dyco3d input_topic:=/map
ros2 launch dyco_perception segment.launch.py decoder:=isbnet namespace:=isbnet input_topic:=/map
(topics /dyco3d/segmentation/..., services /dyco3d/segmentation/..., node /dyco3d/segment_node)
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

SHARE = Path(get_package_share_directory("dyco_perception"))
# Fast DDS reads this variable when the node starts: the profile gives the node a shared-memory
# segment large enough for big labelled clouds, so best-effort subscribers (RViz) get them.
DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "config",
            default_value=str(SHARE / "config" / "segment.yaml"),
            description="Node parameter file (ros__parameters YAML).",
        ),
        DeclareLaunchArgument(
            "decoder",
            default_value="",
            description="Instance decoder: dyco3d | pointgroup | dknet | isbnet. Without a "
            "checkpoint its shipped checkpoint runs (dyco3d's when empty); with one, the node "
            "checks that it holds this decoder. An unknown name stops the node, listing these.",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="",
            description="Model checkpoint (.safetensors); default: the decoder's shipped one. "
            "Relative paths resolve in the package share; ./ or ../ for the working directory.",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the node, its topics, services and parameters; one per "
            "node to run several side by side. Default: none (/segment_node, /segmentation/...).",
        ),
        DeclareLaunchArgument(
            "input_topic",
            default_value="cloud_in",
            description="PointCloud2 topic to segment (relative names resolve in the namespace; "
            "give an absolute one, e.g. /map, to share one input among several nodes).",
        ),
        DeclareLaunchArgument(
            "device", default_value="auto", description="auto | cpu | cuda | cuda:N"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use the /clock topic."
        ),
        DeclareLaunchArgument(
            "managed",
            default_value="false",
            description="Start the managed (lifecycle) node managed_segment_node instead.",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="With managed:=true, configure and activate it at once; false leaves "
            "it unconfigured for a lifecycle manager.",
        ),
        DeclareLaunchArgument(
            "dds_profile",
            default_value=EnvironmentVariable(
                DDS_PROFILE_VARIABLE,
                default_value=str(SHARE / "config" / "fastdds_large_data.xml"),
            ),
            description=f"Fast DDS profile for the node (default: yours if {DDS_PROFILE_VARIABLE} "
            "is set, else the shipped large-data one).",
        ),
        DeclareLaunchArgument(
            "set_dds_profile",
            default_value="true",
            description=f"false: leave {DDS_PROFILE_VARIABLE} as it is (no profile if unset).",
        ),
    ]
    managed = LaunchConfiguration("managed")
    environment = SetEnvironmentVariable(
        DDS_PROFILE_VARIABLE,
        LaunchConfiguration("dds_profile"),
        condition=IfCondition(LaunchConfiguration("set_dds_profile")),
    )
    overrides = {
        # As strings: an empty value must stay "" (the node then picks the shipped checkpoint).
        "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
        "decoder": ParameterValue(LaunchConfiguration("decoder"), value_type=str),
        "device": LaunchConfiguration("device"),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    node_options = {
        "package": "dyco_perception",
        "name": "segment_node",
        "namespace": LaunchConfiguration("namespace"),
        "output": "screen",
        "parameters": [LaunchConfiguration("config"), overrides],
        "remappings": [("cloud_in", LaunchConfiguration("input_topic"))],
    }
    plain_node = Node(executable="segment_node", condition=UnlessCondition(managed), **node_options)
    managed_node = LifecycleNode(
        executable="managed_segment_node", condition=IfCondition(managed), **node_options
    )
    return LaunchDescription(
        [*arguments, environment, plain_node, managed_node, *_autostart(managed_node)]
    )


def _autostart(managed_node: LifecycleNode) -> list:
    """autostart:=true: configure at start, activate once configured (only after configuring,
    so that a later deactivate by a manager or by hand is not undone). With managed:=false the
    lifecycle node does not run and nothing handles these events."""
    wanted = IfCondition(LaunchConfiguration("autostart"))

    def change(transition: int, **action_options) -> EmitEvent:
        event = ChangeState(
            lifecycle_node_matcher=matches_action(managed_node), transition_id=transition
        )
        return EmitEvent(event=event, **action_options)

    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=managed_node,
            start_state="configuring",
            goal_state="inactive",
            entities=[change(Transition.TRANSITION_ACTIVATE)],
        ),
        condition=wanted,
    )
    return [activate_when_configured, change(Transition.TRANSITION_CONFIGURE, condition=wanted)]
