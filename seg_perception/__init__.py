"""seg_perception: camera segmentation and drivable area for ROS 2.

The ROS-free core lives in :mod:`seg_perception.runtime`; the ROS 2 node in
:mod:`seg_perception.ros`; the ``seg-perception`` command line in :mod:`seg_perception.cli`.
"""

__version__ = "0.1.0"

# OpenCV reads its decoder pixel cap once, when cv2 is first imported: set it before anything
# of ours imports cv2 (see seg_perception.runtime.image_codec.OPENCV_MAX_PIXELS).
import os as _os

_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 27))
