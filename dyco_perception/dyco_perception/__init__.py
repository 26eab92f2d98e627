"""dyco_perception: 3D instance segmentation (DyCo3D) of point-cloud maps.

The core (everything but `dyco_perception.ros`) imports numpy and torch only, never rclpy.
"""

__version__ = "0.1.0"
