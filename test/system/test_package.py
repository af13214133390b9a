"""Packaging: config/seg.yaml matches the parameter table; colcon builds the install tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shared_data import REPO

from seg_perception.runtime.config import PARAMS


def test_config_yaml_names_exactly_the_declared_parameters() -> None:
    doc = yaml.safe_load((REPO / "config" / "seg.yaml").read_text())
    params = doc["/**"]["ros__parameters"]
    assert set(params) == {p.name for p in PARAMS}
    for spec in PARAMS:
        assert spec.validate(params[spec.name]) == spec.default, spec.name  # lists: tuples
        assert spec.check(spec.default) is None, spec.name


def test_package_xml_is_format_3_ament_python() -> None:
    import xml.etree.ElementTree as ET

    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "seg_perception"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "diagnostic_msgs",
                "launch_ros", "tf2_ros"):
        assert dep in deps


@pytest.mark.slow
def test_colcon_build_installs_node_launch_and_config(tmp_path: Path) -> None:
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment")
    src = tmp_path / "src" / "seg_perception"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "runs",
                                    "__pycache__", "*.egg-info", ".pytest_cache", "test")
    shutil.copytree(REPO, src, ignore=ignore)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "--build-base", "build",
         "--install-base", "install", "--event-handlers", "console_direct-"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    share = tmp_path / "install" / "seg_perception" / "share" / "seg_perception"
    node = tmp_path / "install" / "seg_perception" / "lib" / "seg_perception" / "seg_node"
    assert node.is_file() and os.access(node, os.X_OK)
    managed = node.with_name("seg_lifecycle_node")
    assert managed.is_file() and os.access(managed, os.X_OK)
    assert (share / "launch" / "seg.launch.py").is_file()
    assert (share / "config" / "seg.yaml").is_file()
    assert (share / "package.xml").is_file()
    index = tmp_path / "install" / "seg_perception" / "share" / "ament_index"
    assert (index / "resource_index" / "packages" / "seg_perception").is_file()


def test_config_yaml_is_generated_from_the_parameter_table() -> None:
    from seg_perception.runtime.config import params_yaml

    assert (REPO / "config" / "seg.yaml").read_text() == params_yaml(), (
        "regenerate with: python -m seg_perception.runtime.config > config/seg.yaml")
