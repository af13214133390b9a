"""launch/seg.launch.py: arguments and the Node it builds.

launch/launch_ros are not on PyPI, so where they are absent this test provides minimal
stand-ins for the few classes the file uses and checks what the file asks them to do. A full
ROS 2 install runs the same checks against the real packages' argument handling.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from shared_data import REPO


class _Recorder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: dict[str, str]) -> str:
        return context[self.name]


def _install_stand_ins(monkeypatch: pytest.MonkeyPatch, share: Path) -> None:
    mods = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.ModuleType("ament_index_python.packages"),
    }
    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    mods["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    mods["launch.actions"].ExecuteProcess = type("ExecuteProcess", (_Recorder,), {})
    mods["launch.actions"].SetEnvironmentVariable = type("SetEnvironmentVariable", (_Recorder,),
                                                         {})
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (_Recorder,), {})
    mods["ament_index_python.packages"].get_package_share_directory = lambda pkg: str(share)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    _install_stand_ins(monkeypatch, tmp_path)
    spec = importlib.util.spec_from_file_location("seg_launch", REPO / "launch" / "seg.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nodes(module: types.ModuleType, **given: str) -> list[Any]:
    entities = module.generate_launch_description()
    declared = {e.args[0] if e.args else e.kwargs["name"]: e.kwargs.get("default_value")
                for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    context = {**declared, **given}
    opaque = next(e for e in entities if type(e).__name__ == "OpaqueFunction")
    return opaque.kwargs["function"](context)


def _env(module: types.ModuleType, **given: str) -> dict[str, str]:
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs.get("default_value")
                for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    opaque = next(e for e in entities if type(e).__name__ == "OpaqueFunction")
    return dict(a.args for a in opaque.kwargs["function"]({**declared, **given})
                if type(a).__name__ == "SetEnvironmentVariable")


def test_launch_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = _load(monkeypatch, tmp_path)
    entities = module.generate_launch_description()
    names = {e.args[0] for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert {"params_file", "namespace", "image_topic", "camera_info_topic", "use_sim_time",
            "model", "checkpoint", "device"} <= names


def test_launch_defaults_use_packaged_params(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    module = _load(monkeypatch, tmp_path)
    (node,) = [a for a in _nodes(module) if type(a).__name__ == "Node"]
    kw = node.kwargs
    assert kw["package"] == "seg_perception" and kw["executable"] == "seg_node"
    assert kw["parameters"][0] == str(tmp_path / "config" / "seg.yaml")
    # Empty model/checkpoint/device leave the params file in charge.
    assert kw["parameters"][1] == {"use_sim_time": False}
    assert ("image", "image") in kw["remappings"]
    assert _env(module) == {"FASTDDS_DEFAULT_PROFILES_FILE":
                            str(tmp_path / "config" / "fastdds_shm.xml")}
    assert _env(module, fastdds_profile="") == {}


def test_launch_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = _load(monkeypatch, tmp_path)
    (node,) = [a for a in _nodes(module, namespace="front", image_topic="/cam/image_raw",
                     camera_info_topic="/cam/camera_info", use_sim_time="true",
                     model="tiny_seg", device="cpu", params_file="/p.yaml")
               if type(a).__name__ == "Node"]
    kw = node.kwargs
    assert kw["namespace"] == "front"
    assert kw["parameters"] == ["/p.yaml", {"model": "tiny_seg", "device": "cpu",
                                            "use_sim_time": True}]
    remaps = dict(kw["remappings"])
    assert remaps["image"] == "/cam/image_raw"
    assert remaps["image/compressed"] == "/cam/image_raw/compressed"
    assert remaps["camera_info"] == "/cam/camera_info"


def test_launch_bag_and_rviz(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = _load(monkeypatch, tmp_path)
    actions = _nodes(module, bag="/data/drive.mcap", rviz="true")
    names = [type(a).__name__ for a in actions]
    assert names == ["SetEnvironmentVariable", "Node", "ExecuteProcess", "Node"]
    seg, play, rviz = actions[1], actions[2], actions[3]
    assert seg.kwargs["parameters"][1]["use_sim_time"] is True  # bag time
    assert play.kwargs["cmd"] == ["ros2", "bag", "play", "--clock", "/data/drive.mcap"]
    assert rviz.kwargs["executable"] == "rviz2"
    assert rviz.kwargs["arguments"] == ["-d", str(tmp_path / "config" / "seg.rviz")]
    assert [type(a).__name__ for a in _nodes(module)] == ["SetEnvironmentVariable", "Node"]
