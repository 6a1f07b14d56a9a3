"""Launch world_model_node with configs/ros/world_model.yaml (installed under share/genie_robot).

    ros2 launch genie_robot world_model.launch.py model_dir:=/path/to/export image:=/camera/image_raw \
        [namespace:=robot1] [params_file:=my_params.yaml] [log_level:=debug] [use_sim_time:=true] \
        [camera_transport:=compressed] [autostart:=false]

`params_file` replaces the installed parameters file; `model_dir`, `camera_transport`, `use_sim_time`
and `autostart` given here override what it says. The node is a lifecycle node: with autostart (the
default) it configures and activates itself; with autostart:=false it waits unconfigured for its
transitions (`ros2 lifecycle set /world_model_node configure`, or a lifecycle manager such as
nav2_lifecycle_manager bringing nodes up in order).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    params = Path(get_package_share_directory("genie_robot")) / "configs/ros/world_model.yaml"
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", description="exported model directory (genie-robot export)"),
        DeclareLaunchArgument("image", default_value="image",
                              description="camera topic (with camera_transport compressed: its /compressed topic)"),
        DeclareLaunchArgument("camera_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed (CompressedImage, JPEG or PNG)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("params_file", default_value=str(params), description="the node's parameters file"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (simulation) time"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at start (false: wait for lifecycle transitions)"),
        Node(package="genie_robot", executable="world_model_node", name="world_model_node", output="screen",
             namespace=LaunchConfiguration("namespace"),
             parameters=[LaunchConfiguration("params_file"),
                         {"model_dir": LaunchConfiguration("model_dir"),
                          "camera_transport": LaunchConfiguration("camera_transport"),
                          "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                          "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)}],
             arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
             remappings=[("image", LaunchConfiguration("image")),
                         ("image/compressed", [LaunchConfiguration("image"), "/compressed"])]),
    ])
