"""The ROS command-line tools beside the node: dyco-make-bag, dyco-replay, dyco-demo, bag IO,
the SegmentationClient and starting/stopping segment_node processes (they use rclpy and the
node's modules in `dyco_perception.ros`; the node never imports them)."""
