"""Camera image codecs without cv_bridge: raw ``sensor_msgs/Image`` payloads and JPEG/PNG.

cv_bridge is a compiled ROS package that cannot be pip-installed, so the node and the tools
decode and encode image payloads here with numpy and OpenCV only. The results match what
``cv_bridge.imgmsg_to_cv2(msg, "rgb8")`` returns, using the same OpenCV conversion codes.
Nothing here imports a ROS package: functions take the message fields as plain values.

Decoding works on a zero-copy ``np.frombuffer`` view of the payload; row padding
(``step`` > width * bytes per pixel) is dropped by slicing that view, so the only copy made
is the colour conversion's output (and none at all for ``rgb8`` unless ``copy=True``).

Every decoder refuses an image larger than ``max_pixels`` (default
:data:`DEFAULT_MAX_PIXELS`) before it allocates anything: raw images by their width and
height fields, JPEG and PNG by the size in their headers (SOFn marker, IHDR chunk), read
here without decoding. JPEG and PNG are decoded with Pillow, which reports corrupt data as an
exception; OpenCV's decoders print libjpeg/libpng messages straight to the process's stderr,
past any logging, so OpenCV only decodes what Pillow cannot (16-bit colour PNG and files that
are neither JPEG nor PNG), under its own pixel cap (``OPENCV_IO_MAX_IMAGE_PIXELS``, set by
``seg_perception/__init__.py``) and with the result's size checked.

Every :class:`ImageDecodeError` carries a ``kind``: a short, stable name of the problem
(``"encoding.unsupported"``, ``"compressed.corrupt"``, ...) without the values that differ from
message to message, for rate-limiting warnings per kind of probl
This ``__init__`` is the public surface (import from ``seg_perception.runtime.image_codec``);
by concern: :mod:`.payload` (the error, pixel limits, byte views), :mod:`.raw` (raw
encodings), :mod:`.compressed` (JPEG/PNG).
"""

from seg_perception.runtime.image_codec.compressed import (
    ImageHeader,
    compressed_header,
    decode_compressed,
    encode_compressed,
)
from seg_perception.runtime.image_codec.payload import (
    DEFAULT_MAX_PIXELS,
    OPENCV_MAX_PIXELS,
    ImageDecodeError,
    check_pixels,
)
from seg_perception.runtime.image_codec.raw import (
    SUPPORTED_ENCODINGS,
    decode_raw,
    encode_raw,
    image_payload,
    mono16_to_mono8,
    validate_raw,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "OPENCV_MAX_PIXELS",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "ImageHeader",
    "check_pixels",
    "compressed_header",
    "decode_compressed",
    "decode_raw",
    "encode_compressed",
    "encode_raw",
    "image_payload",
    "mono16_to_mono8",
    "validate_raw",
]
