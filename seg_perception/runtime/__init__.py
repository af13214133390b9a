"""The ROS-free runtime: models, engine and backends, the frame pipeline, geometry, config.

What a deployed node or an offline job executes per frame, and nothing else. It imports
only the standard library, numpy/OpenCV/torch and optional accelerators (ONNX Runtime,
OpenVINO); never :mod:`seg_perception.offline`, ``sim``, ``tools``, ``training``, ``ros``
or ``cli``, and never rclpy or cv_bridge (``test/unit/test_layering.py`` checks). It logs
through :mod:`logging`.
"""
