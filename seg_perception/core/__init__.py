"""ROS-free core: models, engine, image codecs, drivable-area geometry.

Nothing under this package imports rclpy or cv_bridge; it logs through :mod:`logging`.
"""
