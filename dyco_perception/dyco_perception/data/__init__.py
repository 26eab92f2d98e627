"""Scene data tools beside the inference core: nothing on the segmentation path imports them.

`room_generator`: procedural furnished rooms with ScanNet-style labels, for the demo scene,
`dyco-make-bag --rooms` (a ROS tool, so it lives in dyco_perception, not in dyco_training) and
extra training data.
"""
