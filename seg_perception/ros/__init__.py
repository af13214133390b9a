"""ROS 2 layer: the ``seg_node`` node, its parameters and message conversions.

Only this package imports rclpy and message types; the work itself is done in
:mod:`seg_perception.core`.
"""
