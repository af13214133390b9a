"""seg_perception: camera segmentation and drivable area for ROS 2.

The ROS-free core lives in :mod:`seg_perception.core`; the ROS 2 node in
:mod:`seg_perception.ros`; the ``seg-perception`` command line in :mod:`seg_perception.cli`.
"""

__version__ = "0.1.0"
