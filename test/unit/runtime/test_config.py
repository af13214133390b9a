"""The parameter table and the pipeline's configuration snapshot (ROS-free)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from seg_perception.runtime.config import (
    DEFAULTS,
    PARAMS,
    PARAMS_BY_NAME,
    ConfigError,
    PipelineConfig,
    read_params_file,
    validate_values,
)


def test_every_parameter_is_typed_bounded_and_its_default_valid() -> None:
    for spec in PARAMS:
        assert spec.type in (bool, int, float, str, tuple), spec.name
        assert spec.check(spec.default) is None, spec.name
        if spec.type is float:  # every double has a finite range (no .inf, no 1e308)
            assert spec.min is not None and spec.max is not None, spec.name
            assert math.isfinite(spec.min) and math.isfinite(spec.max), spec.name
    assert PipelineConfig.from_params() == PipelineConfig.from_params(DEFAULTS)
    assert PipelineConfig.from_params().grid_frame == "base_footprint"
    assert DEFAULTS["use_tf"] is True


def test_integers_are_accepted_where_doubles_are_declared() -> None:
    assert PARAMS_BY_NAME["camera.x"].validate(1) == 1.0
    assert isinstance(PARAMS_BY_NAME["camera.x"].validate(1), float)
    assert PipelineConfig.from_params({"camera.x": 2, "grid.x_max": 30}).mounting.x == 2.0
    with pytest.raises(ConfigError, match=re.escape("camera.x must be a double, got str")):
        PARAMS_BY_NAME["camera.x"].validate("abc")
    with pytest.raises(ConfigError, match="boolean"):
        PARAMS_BY_NAME["use_tf"].validate(1)
    with pytest.raises(ConfigError, match="must be an integer"):
        PARAMS_BY_NAME["boundary.max_vertices"].validate(12.5)
    with pytest.raises(ConfigError, match="valid values: raw, compressed"):
        PARAMS_BY_NAME["input_transport"].validate(3)


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("boundary.min_region_area", math.inf, "not a finite number"),
    ("grid.x_min", -1e308, "below its minimum"),
    ("grid.y_max", 1e308, "above its maximum"),
    ("camera.z", math.nan, "not a finite number"),
    ("grid.resolution", 0.0, "below its minimum"),
    ("tf_timeout", -math.inf, "not a finite number"),
    ("device", "gpu0", "valid values: auto, cpu, cuda, cuda:N"),
    ("image_type", "rect", "valid values: auto, raw, rectified"),
])
def test_non_finite_absurd_and_unknown_values_are_refused_with_a_reason(
        name: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        PipelineConfig.from_params({name: value})


def test_combinations_are_checked_together() -> None:
    order = re.escape("grid.x_min = 50.0 must be < grid.x_max = 40.0")
    with pytest.raises(ConfigError, match=order):
        PipelineConfig.from_params({"grid.x_min": 50.0})
    # ... but the same values are fine when the other one moves too
    cfg = PipelineConfig.from_params({"grid.x_min": 50.0, "grid.x_max": 60.0})
    assert (cfg.grid.x_min, cfg.grid.x_max) == (50.0, 60.0)
    with pytest.raises(ConfigError, match=re.escape("camera.z")):
        PipelineConfig.from_params({"camera.z": 0.0})
    with pytest.raises(ConfigError, match="cells exceeds"):
        PipelineConfig.from_params({"grid.resolution": 0.001})
    with pytest.raises(ConfigError, match=re.escape("grid.max_range")):
        PipelineConfig.from_params({"grid.max_range": 0.0})
    typo = re.escape("not a parameter of seg_node; did you mean grid.x_min")
    with pytest.raises(ConfigError, match=typo):
        validate_values({"grid.xmin": 1.0})
    validate_values({"use_sim_time": True})  # a ROS parameter, not ours: fine


def test_snapshots_are_immutable_and_compare_by_value() -> None:
    a = PipelineConfig.from_params({"overlay_alpha": 0.3})
    with pytest.raises(AttributeError):
        a.overlay_alpha = 0.9  # type: ignore[misc]
    assert a == PipelineConfig.from_params({"overlay_alpha": 0.3})
    assert a.mapper_key == PipelineConfig.from_params().mapper_key  # alpha is not geometry
    assert a.mapper_key != PipelineConfig.from_params({"grid.resolution": 0.2}).mapper_key


@pytest.mark.parametrize(("topic", "image_type", "rectified"), [
    ("/cam/image_raw", "auto", False),
    ("/cam/image_rect", "auto", True),
    ("/cam/image_rect_color", "auto", True),
    ("/cam/image_rect_color/compressed", "auto", True),
    ("/cam/image", "auto", False),
    ("/cam/image_raw", "rectified", True),
    ("/cam/image_rect", "raw", False),
])
def test_rectified_input_from_parameter_or_topic_name(topic: str, image_type: str,
                                                     rectified: bool) -> None:
    assert PipelineConfig.from_params({"image_type": image_type}).rectified(topic) is rectified


def test_params_file_sections_and_nesting(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    grid:\n      resolution: 0.2\n"
                 "    camera.x: 1\n/front/seg_node:\n  ros__parameters:\n    camera:\n"
                 "      yaw: 0.5\nother_node:\n  ros__parameters:\n    camera.x: 9.0\n")
    glob, per_ns = read_params_file(f)
    assert glob == {"grid.resolution": 0.2, "camera.x": 1}
    assert per_ns == {"/front": {"camera.yaw": 0.5}}
    f.write_text("- not: a mapping\n")
    with pytest.raises(ConfigError, match="not a ROS 2 parameters file"):
        read_params_file(f)


def test_geometry_defaults_are_the_tables() -> None:
    """The mapper's and grid's keyword defaults repeat the table's (one set of defaults)."""
    from seg_perception.runtime.geometry import CameraMounting, GridSpec, mapper

    assert PipelineConfig.from_params().grid == GridSpec()
    assert PipelineConfig.from_params().mounting == CameraMounting()
    assert DEFAULTS["grid.max_range"] == mapper.DEFAULT_MAX_RANGE
    assert DEFAULTS["grid.max_pixel_footprint"] == mapper.DEFAULT_MAX_PIXEL_FOOTPRINT
    assert DEFAULTS["mask.speckle_area"] == mapper.DEFAULT_SPECKLE_AREA
    assert DEFAULTS["boundary.max_vertices"] == mapper.DEFAULT_MAX_VERTICES
    assert DEFAULTS["boundary.min_region_area"] == mapper.DEFAULT_MIN_REGION_AREA


# --- several cameras ---------------------------------------------------------------------------

def test_cameras_default_is_one_unprefixed_camera() -> None:
    from seg_perception.runtime.config import SINGLE_CAMERA, camera_specs

    assert DEFAULTS["cameras"] == SINGLE_CAMERA == ("",)
    assert PARAMS_BY_NAME["cameras"].validate(["front", "rear"]) == ("front", "rear")
    assert camera_specs(SINGLE_CAMERA) == {}  # no per-camera parameters for it
    assert PipelineConfig.from_params({"cameras": [""]}) == PipelineConfig.from_params()


@pytest.mark.parametrize(("cameras", "reason"), [
    ([], "at least one camera"),
    (["front", "front"], "front listed more than once"),
    (["front", ""], "is not a camera name"),
    (["front/left"], "is not a camera name"),
    (["9cam"], "is not a camera name"),
    (["grid"], "also the name of a parameter"),
    (["camera"], "also the name of a parameter"),
    ([f"c{i}" for i in range(17)], "at most 16"),
    ("front", "must be a list of strings"),
    ([1, 2], "must be a list of strings"),
])
def test_bad_camera_lists_are_refused(cameras: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        validate_values({"cameras": cameras})


def test_per_camera_values_override_the_global_ones() -> None:
    values = {"cameras": ["front", "rear"], "image_type": "rectified", "camera.z": 1.2,
              "rear.image_type": "raw", "rear.camera.yaw": 3, "front.input_transport":
              "compressed"}
    checked = validate_values(values)
    assert checked["rear.camera.yaw"] == 3.0 and isinstance(checked["rear.camera.yaw"], float)
    front = PipelineConfig.from_params(values, camera="front")
    rear = PipelineConfig.from_params(values, camera="rear")
    assert front.image_type == "rectified" and rear.image_type == "raw"
    assert (front.mounting.yaw, rear.mounting.yaw) == (0.0, 3.0)
    assert front.mounting.z == rear.mounting.z == 1.2
    # a camera's own value is checked like the global one, and named as its own
    with pytest.raises(ConfigError, match=re.escape("rear.camera.z = 0.0")):
        PipelineConfig.from_params({**values, "rear.camera.z": 0.0}, camera="rear")
    with pytest.raises(ConfigError, match="valid values: raw, compressed"):
        validate_values({**values, "rear.input_transport": "theora"})
    # per-camera names exist only for the cameras listed
    with pytest.raises(ConfigError, match=re.escape("left.image_type is not a parameter")):
        validate_values({**values, "left.image_type": "raw"})
    with pytest.raises(ConfigError, match=re.escape("front.image_type is not a parameter")):
        validate_values({"front.image_type": "raw"})


def test_generated_yaml_lists_cameras_and_fusion(tmp_path: Path) -> None:
    from seg_perception.runtime.config import params_yaml

    text = params_yaml()
    assert '    cameras: [""]' in text
    assert "    fusion.max_age: 0.2" in text
    f = tmp_path / "p.yaml"
    f.write_text(text)
    glob, _ = read_params_file(f)
    assert glob["cameras"] == [""]
    assert PipelineConfig.from_params(glob) == PipelineConfig.from_params()


def test_several_cameras_without_tf_need_their_own_poses() -> None:
    """use_tf false with several cameras: the camera.* pose per camera (X.camera.*), or a
    one-line refusal naming two cameras that share one (the fused grid would be wrong)."""
    from seg_perception.runtime.config import check_camera_poses

    cams = ["front", "left", "rear"]

    def configs(values: dict) -> dict:
        values = {"cameras": cams, **values}
        return {c: PipelineConfig.from_params(values, camera=c) for c in cams}

    check_camera_poses(configs({}))  # use_tf true: poses from /tf
    with pytest.raises(ConfigError, match=r"use_tf is false .* front and left have the same "
                       r"camera\.\* pose.*left\.camera\.x"):
        check_camera_poses(configs({"use_tf": False, "left.camera.z": 1.5}))
    check_camera_poses(configs({"use_tf": False, "left.camera.yaw": 1.57,
                                "rear.camera.yaw": 3.14}))
    single = PipelineConfig.from_params({"use_tf": False})
    check_camera_poses({"": single})
