"""Developer tools around the runtime: benchmarks, int8 quantization, the soak report, and
the node as a child process (:mod:`.node_process`).

May import :mod:`seg_perception.runtime`, ``offline``, ``sim`` and ``training``; never
``ros`` or ``cli``, and never rclpy (the ROS soak and demo drivers live in
:mod:`seg_perception.ros`).
"""
