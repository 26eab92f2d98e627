"""The thin rclpy layer: the segmentation node, rosbag tools and replay evaluation."""
