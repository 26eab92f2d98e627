"""dyco_perception: 3D instance segmentation (DyCo3D) of point-cloud maps.

The core (everything but the node, `dyco_perception.ros`, and its command-line tools,
`dyco_perception.tools`) imports numpy and torch only, never rclpy.
"""

__version__ = "0.1.0"
