"""Offline processing of recorded bags: bag I/O, ``process`` (one bag), ``process-many``.

Reads and writes MCAP/rosbag2 through ``rosbags``/``mcap`` without a ROS installation. It
may import :mod:`seg_perception.runtime` only (and Ray for archives); never ``ros``,
``sim``, ``tools``, ``training`` or ``cli``, and never rclpy.
"""
