"""ROS 2 adapters: the node, its parameters, message conversions, tf, the demo and soak drivers.

The only package that imports rclpy, cv_bridge, tf2 and message types; the work itself is
done in :mod:`seg_perception.runtime`. May import ``runtime``, ``offline``, ``sim`` and
``tools``; never ``training`` or ``cli``.
"""
