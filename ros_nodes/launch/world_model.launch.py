"""Launch world_model_node with configs/ros/world_model.yaml (installed under share/genie_robot).

    ros2 launch genie_robot world_model.launch.py model_dir:=/path/to/export image:=/camera/image_raw
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    params = Path(get_package_share_directory("genie_robot")) / "configs/ros/world_model.yaml"
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", description="exported model directory (genie-robot export)"),
        DeclareLaunchArgument("image", default_value="image", description="camera topic"),
        Node(package="genie_robot", executable="world_model_node", name="world_model_node", output="screen",
             parameters=[str(params), {"model_dir": LaunchConfiguration("model_dir")}],
             remappings=[("image", LaunchConfiguration("image"))]),
    ])
