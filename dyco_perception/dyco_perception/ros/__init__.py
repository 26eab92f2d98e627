"""The thin rclpy layer: the segmentation node (plain and managed), its parameters, outputs and
object map. The command-line tools that talk to it live in `dyco_perception.tools`."""
