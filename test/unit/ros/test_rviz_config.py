"""config/seg.rviz: valid YAML in rviz2's layout, showing only topics the node has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from shared_data import REPO

from seg_perception.offline.topics import OUTPUT_TYPES

RVIZ = REPO / "config" / "seg.rviz"

# What each rviz display class can show, as message types.
DISPLAY_TYPES = {
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/Map": "nav_msgs/msg/OccupancyGrid",
    "rviz_default_plugins/Polygon": "geometry_msgs/msg/PolygonStamped",
}
# The node (no namespace): subscriptions and publications with their types (CONTRACT.md).
NODE_TOPICS = {"/image": "sensor_msgs/msg/Image",
               **{f"/{name}": msgtype for name, msgtype in OUTPUT_TYPES.items()},
               "/drivable/map": "nav_msgs/msg/OccupancyGrid"}
#: The one output published transient local (like a map server's map); the rest volatile.
LATCHED = {"/drivable/map"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(RVIZ.read_text())


def displays(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from displays(item.get("Displays", []))  # rviz_common/Group


def test_layout_is_rviz2(config: dict[str, Any]) -> None:
    assert {"Panels", "Visualization Manager", "Window Geometry"} <= set(config)
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "base_footprint"  # the grid_frame
    classes = {d["Class"] for d in displays(manager["Displays"])}
    assert {"rviz_default_plugins/Image", "rviz_default_plugins/Map",
            "rviz_default_plugins/Polygon"} <= classes
    assert all(c.startswith(("rviz_default_plugins/", "rviz_common/")) for c in classes)
    assert any(p["Class"] == "rviz_common/Displays" for p in config["Panels"])


def test_every_topic_is_one_of_the_node(config: dict[str, Any]) -> None:
    shown = {}
    for display in displays(config["Visualization Manager"]["Displays"]):
        topic = display.get("Topic")
        if topic is None:
            continue
        assert isinstance(topic, dict), f"{display['Name']}: rviz2 keeps Topic as a mapping"
        name = topic["Value"]
        assert name in NODE_TOPICS, f"{display['Name']} shows {name}, which the node lacks"
        assert NODE_TOPICS[name] == DISPLAY_TYPES[display["Class"]], display["Name"]
        shown[name] = topic
    assert set(shown) == {"/image", "/overlay", "/labels_color", "/drivable/grid",
                          "/drivable/boundary", "/drivable/map"}
    # The node publishes reliable + volatile but for the map: a transient-local subscription
    # (rviz's Map default) to a volatile topic would be incompatible and never connect.
    assert all(t["Durability Policy"] == ("Transient Local" if n in LATCHED else "Volatile")
               for n, t in shown.items())


def test_node_publishes_the_image_outputs() -> None:
    """The image outputs the config shows exist in the node itself, not only in the contract."""
    camera_io = pytest.importorskip("seg_perception.ros.camera_io")  # a camera's publishers
    assert {"overlay", "labels_color"} <= set(camera_io.IMAGE_OUTPUTS)


SURROUND = REPO / "config" / "seg_surround.rviz"
CAMERAS = ("front", "left", "right", "rear")
# A node with cameras [front, left, right, rear]: each camera's image outputs under X/, its
# own grid on request, and the fused grid and boundary on the unprefixed names.
SURROUND_TOPICS = {
    **{f"/{c}/{name}": msgtype for c in CAMERAS for name, msgtype in OUTPUT_TYPES.items()},
    "/drivable/grid": "nav_msgs/msg/OccupancyGrid",
    "/drivable/boundary": "geometry_msgs/msg/PolygonStamped",
    "/drivable/map": "nav_msgs/msg/OccupancyGrid",
}


def test_surround_config_shows_four_cameras_and_the_fused_grid() -> None:
    config = yaml.safe_load(SURROUND.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "base_footprint"
    shown = {}
    for display in displays(manager["Displays"]):
        assert display["Class"].startswith(("rviz_default_plugins/", "rviz_common/"))
        topic = display.get("Topic")
        if topic is None:
            continue
        name = topic["Value"]
        assert name in SURROUND_TOPICS, f"{display['Name']} shows {name}, which the node lacks"
        assert SURROUND_TOPICS[name] == DISPLAY_TYPES[display["Class"]], display["Name"]
        shown[name] = topic
    assert set(shown) == {*(f"/{c}/overlay" for c in CAMERAS), "/drivable/grid",
                          "/drivable/boundary", "/drivable/map"}
    assert all(t["Durability Policy"] == ("Transient Local" if n in LATCHED else "Volatile")
               for n, t in shown.items())
    assert any(d["Class"] == "rviz_default_plugins/TF" for d in displays(manager["Displays"]))


def test_launch_takes_another_rviz_config() -> None:
    text = (REPO / "launch" / "seg.launch.py").read_text()
    assert 'DeclareLaunchArgument("rviz_config"' in text
