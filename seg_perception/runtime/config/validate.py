"""Checking parameter values against the table: names, types, bounds, per-camera values.

Split from the table (:mod:`.table`) so what the node, ``process --params-file`` and
:class:`~.snapshot.PipelineConfig` do with a set of values reads apart from the values'
definitions: unknown names are refused with the nearest real ones, each value is coerced
and checked, and a camera of ``cameras`` sees its own ``X.<name>`` values.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from seg_perception.runtime.config.table import (
    CAMERA_PARAMS,
    NODE_NAME,
    PARAMS_BY_NAME,
    ROS_PARAMETERS,
    ConfigError,
    ParamSpec,
    camera_param,
    camera_specs,
)


def unknown_parameter_message(name: str, known: Iterable[str] = ()) -> str:
    """Why ``name`` is not a parameter of the node, with the nearest real names."""
    close = difflib.get_close_matches(name, [*PARAMS_BY_NAME, *known], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{name} is not a parameter of {NODE_NAME}{hint}"


def is_ros_parameter(name: str) -> bool:
    """Parameters every ROS node has or launch sets (never ours to check)."""
    return name in ROS_PARAMETERS or name.startswith("qos_overrides.")


def validate_values(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Every known parameter of ``values`` coerced and checked (unknown names are refused).

    Per-camera names (``front.image_type``) are known for the cameras ``values`` lists in
    ``cameras``. Raises :class:`ConfigError` naming the first bad parameter (prefixed with
    ``where``).
    """
    out: dict[str, Any] = {}
    prefix = f"{where}: " if where else ""
    specs: Mapping[str, ParamSpec] = PARAMS_BY_NAME
    if "cameras" in values:
        try:
            cameras = PARAMS_BY_NAME["cameras"].validate(values["cameras"])
        except ConfigError as exc:
            raise ConfigError(prefix + str(exc)) from None
        specs = {**PARAMS_BY_NAME, **camera_specs(cameras)}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            if is_ros_parameter(name):
                continue
            raise ConfigError(prefix + unknown_parameter_message(name, specs))
        try:
            out[name] = spec.validate(value)
        except ConfigError as exc:
            raise ConfigError(prefix + str(exc)) from None
    return out


def camera_values(values: Mapping[str, Any], camera: str) -> dict[str, Any]:
    """``values`` as camera ``camera`` sees them: its own ``camera.<name>`` entries in place
    of the global ones (the unprefixed camera ``""`` has none)."""
    if not camera:
        return dict(values)
    out = dict(values)
    for name in CAMERA_PARAMS:
        own = values.get(camera_param(camera, name))
        if own is not None:
            out[name] = own
    return out


__all__ = [
    "camera_values",
    "is_ros_parameter",
    "unknown_parameter_message",
    "validate_values",
]
