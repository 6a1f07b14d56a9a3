"""ROS 2 nodes (rclpy), installed as the `genie_robot_ros` package: thin layers over genie_robot.runtime."""
