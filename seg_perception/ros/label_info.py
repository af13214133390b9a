"""``label_info`` (vision_msgs/LabelInfo): what the ids in ``labels`` mean, for late joiners.

Consumers such as the Nav2 semantic segmentation layer map their cost classes by name, so they
need the model's id -> name map before the first ``labels`` frame. The message is constant per
model, so it is published once, reliable and transient local (like a latched CameraInfo): a
subscriber that starts later still receives it. vision_msgs is not one of the PyPI wheels the
package requires; without it the node logs one info line and publishes no ``label_info``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

if TYPE_CHECKING:
    from seg_perception.runtime.models.meta import ModelMeta

TOPIC = "label_info"

# ``labels`` is the arg-max over the classes: no pixel is cut off for low confidence (its
# winning probability is on ``confidence``), so the threshold applied is 0.
ARGMAX_THRESHOLD = 0.0


def label_info_qos() -> QoSProfile:
    """Reliable, transient local, depth 1: the last message reaches subscribers that join late."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def build_label_info(meta: ModelMeta, stamp: Any = None,
                     threshold: float = ARGMAX_THRESHOLD) -> Any:
    """The LabelInfo of ``meta``: class id -> class name for every class, and ``threshold``.

    Raises ImportError where vision_msgs is not installed.
    """
    from vision_msgs.msg import LabelInfo, VisionClass

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"confidence threshold must be in [0, 1], got {threshold}")
    msg = LabelInfo()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.class_map = [VisionClass(class_id=i, class_name=name)
                     for i, name in enumerate(meta.class_names)]
    msg.threshold = float(threshold)
    return msg


def label_info_type(node: Any, topic: str = TOPIC) -> Any | None:
    """vision_msgs' LabelInfo class, or None with one info line on ``node``'s log where
    vision_msgs does not import (the node then creates no ``label_info`` publisher)."""
    try:
        from vision_msgs.msg import LabelInfo
    except ImportError:
        node.get_logger().info(
            f"vision_msgs is not installed: {node.resolve_topic_name(topic)} "
            "(vision_msgs/LabelInfo) is not published")
        return None
    return LabelInfo
