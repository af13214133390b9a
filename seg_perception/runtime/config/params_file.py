"""ROS 2 parameter files: reading one as the node would, and writing ``config/seg.yaml``.

Split from the table (:mod:`.table`) because files are a way in and out of it, not part of
it: :func:`read_params_file` reads a ``--params-file`` YAML (sections ``/**``, the node's
name, namespaces) for ``process``; :func:`params_yaml` generates ``config/seg.yaml`` from
the table (``python -m seg_perception.runtime.config > config/seg.yaml``; a test checks the
file is current).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from seg_perception.runtime.config.table import NODE_NAME, PARAMS, ConfigError, ParamSpec


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def read_params_file(path: str | Path, node_name: str = NODE_NAME
                     ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(global, per_namespace)`` parameters of a ROS 2 parameter file, as the node reads it.

    Global: sections ``/**``, ``**``, ``<node>``, ``/<node>``, ``/**/<node>``. Per namespace:
    ``/<ns>/<node>`` and ``/<ns>/**`` (the latter applied first). Nested keys are joined with
    dots (``grid: {resolution: 0.2}`` is ``grid.resolution``). Values are not checked here.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read parameters file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a ROS 2 parameters file (top level must be a mapping)")
    glob: dict[str, Any] = {}
    per_ns: dict[str, dict[str, Any]] = {}
    order = sorted(doc, key=lambda k: (not str(k).endswith("**"), str(k)))
    for key in order:
        section = doc[key]
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"),
                                                           dict):
            continue
        params = _flatten(section["ros__parameters"])
        name = "/" + str(key).strip("/")
        if name in ("/**", f"/{node_name}", f"/**/{node_name}"):
            glob.update(params)
        elif name.endswith(f"/{node_name}") or name.endswith("/**"):
            ns = name.rsplit("/", 1)[0]
            per_ns.setdefault(ns, {}).update(params)
    return glob, per_ns


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def describe(spec: ParamSpec) -> str:
    """The description with the valid values and whether it can change at run time."""
    desc = spec.description
    if spec.choices:
        desc += f" Valid: {', '.join(spec.choices)}."
    if spec.min is not None or spec.max is not None:
        lo = "-inf" if spec.min is None else spec.min
        hi = "inf" if spec.max is None else spec.max
        desc += f" Range: [{lo}, {hi}]."
    desc += " Read-only." if spec.read_only else " Can be changed at run time."
    return desc


def params_yaml(params: Iterable[ParamSpec] = PARAMS) -> str:
    """``config/seg.yaml``: every parameter with its default and its description as comments.

    Regenerate the file with ``python -m seg_perception.runtime.config > config/seg.yaml``.
    """
    import textwrap

    lines = [
        "# Parameters of seg_node (and of `seg-perception process --params-file`): every",
        "# parameter, with its default. Generated: python -m seg_perception.runtime.config",
        "# Use: ros2 launch seg_perception seg.launch.py params_file:=/path/to/copy.yaml",
        "#  or: seg_node --ros-args --params-file config/seg.yaml",
        "# Model facts (input size, normalisation, classes, palette, drivable classes) travel",
        "# with the weights and are not parameters.",
        "/**:",
        "  ros__parameters:",
    ]
    for p in params:
        lines += ["    # " + line
                  for line in textwrap.wrap(describe(p), 90, break_on_hyphens=False)]
        lines.append(f"    {p.name}: {_fmt(p.default)}")
        if p.name == "cameras":
            lines += ["    # Several cameras, each with some values of its own, e.g.:",
                      "    #   cameras: [front, left, right, rear]",
                      "    #   front:",
                      "    #     input_transport: compressed",
                      "    #   rear:",
                      "    #     image_type: rectified",
                      "    #     camera:",
                      "    #       yaw: 3.1416"]
    return "\n".join(lines) + "\n"


__all__ = [
    "describe",
    "params_yaml",
    "read_params_file",
]
