"""The core parameter table (:mod:`seg_perception.runtime.config`) as ROS 2 parameters.

:class:`ParameterBridge` declares every parameter with a descriptor (description, valid
values, ranges, read-only), and keeps one immutable
:class:`~seg_perception.runtime.config.PipelineConfig` snapshot that workers read once per frame.
It follows the ros2/demos pattern: new values are *validated* in the on-set callback (each
value, then the whole combination) and *applied* in the post-set callback, which builds the
next snapshot. Several parameters set in one request are validated together: for
SetParametersAtomically that is rclpy's own behaviour, and the node's SetParameters service
(``ros2 param load``) is served the same way (each parameter that is individually acceptable
is applied in one atomic step, or none of them).

Users type integers where doubles are declared (``-p camera.x:=1``, ``ros2 param set ...
camera.x 1``): those become floats, at start-up and at run time.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rcl_interfaces.srv import SetParameters
from rclpy.exceptions import ParameterException, ParameterNotDeclaredException
from rclpy.node import Node
from rclpy.parameter import Parameter

from seg_perception.runtime.config import (
    PARAMS,
    PARAMS_BY_NAME,
    SINGLE_CAMERA,
    ConfigError,
    ParamSpec,
    PipelineConfig,
    camera_specs,
    check_camera_poses,
    describe,
    is_ros_parameter,
    params_yaml,
    unknown_parameter_message,
)


class StartupError(RuntimeError):
    """The node cannot start with its parameters (one line: what is wrong, what is valid)."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of a table entry (``ros2 param describe`` shows it)."""
    d = ParameterDescriptor(description=describe(spec), read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.min is not None and spec.max is not None:
        if spec.type is float:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max))
            ]
        elif spec.type is int:
            d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max),
                                            step=1)]
    return d


def _coerced(param: Parameter, specs: Mapping[str, ParamSpec] = PARAMS_BY_NAME) -> Parameter:
    """``param`` with an integer value turned into a double where the table declares one."""
    spec = specs.get(param.name)
    if (spec is not None and spec.type is float and param.type_ == Parameter.Type.INTEGER):
        return Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
    return param


def _ros_default(spec: ParamSpec) -> Any:
    """The default as rclpy declares it (a list for list-of-strings parameters)."""
    return list(spec.default) if isinstance(spec.default, tuple) else spec.default


Configs = Mapping[str, PipelineConfig]


class ParameterBridge:
    """Declares the table on ``node`` and keeps the current values and config snapshots.

    ``cameras`` (read-only) is declared first; each named camera ``X`` then gets its own
    ``X.<name>`` entries (:data:`~seg_perception.runtime.config.CAMERA_PARAMS`), whose defaults
    are the global values at start-up. :attr:`config` is the global snapshot,
    :attr:`configs` one per camera (the same object for the single unprefixed camera).
    ``on_change(config, changed)`` listeners are called (in the executor thread) after
    each accepted change with the new global snapshot and the names that changed.
    ``descriptors`` makes each entry's ParameterDescriptor (a lifecycle node relaxes
    ``read_only``).
    """

    def __init__(self, node: Node,
                 descriptors: Callable[[ParamSpec], ParameterDescriptor] | None = None) -> None:
        self.node = node
        self._descriptor = descriptors or descriptor
        self._lock = threading.Lock()
        self._listeners: list[Callable[[PipelineConfig, dict[str, Any]], None]] = []
        self._specs: dict[str, ParamSpec] = dict(PARAMS_BY_NAME)
        self._values = self._declare()
        self.cameras: tuple[str, ...] = self._values["cameras"]
        try:
            self._config, self._configs = self._snapshots(self._values)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        if hasattr(node, "add_pre_set_parameters_callback"):
            node.add_pre_set_parameters_callback(self._pre_set)
        node.add_on_set_parameters_callback(self._on_set)
        node.add_post_set_parameters_callback(self._post_set)
        self._serve_set_parameters_together()

    # -- start-up -------------------------------------------------------------------------
    def _declare_one(self, spec: ParamSpec, overrides: dict[str, Parameter]) -> Any:
        node = self.node
        override = overrides.get(spec.name)
        if override is not None:
            try:
                value = spec.validate(override.value)
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
            overrides[spec.name] = Parameter(spec.name, value=value)
        try:
            value = node.declare_parameter(spec.name, _ros_default(spec),
                                           self._descriptor(spec)).value
        except ParameterException as exc:  # what the override check above did not see
            raise StartupError(f"{spec.name}: {exc}") from None
        return spec.validate(value)

    def _declare(self) -> dict[str, Any]:
        node = self.node
        overrides: dict[str, Parameter] = getattr(node, "_parameter_overrides", {})
        values: dict[str, Any] = {}
        for spec in PARAMS:  # ``cameras`` among them, before the per-camera ones
            values[spec.name] = self._declare_one(spec, overrides)
        # Each camera's own entries, defaulting to the global values just declared.
        own = camera_specs(values["cameras"], values)
        self._specs.update(own)
        for spec in own.values():
            values[spec.name] = self._declare_one(spec, overrides)
        for name in sorted(overrides):
            if name not in self._specs and not is_ros_parameter(name):
                node.get_logger().warning(
                    f"{unknown_parameter_message(name, self._specs)} (ignored)")
        return values

    def _snapshots(self, values: Mapping[str, Any]) -> tuple[PipelineConfig, Configs]:
        """The global snapshot and one per camera (raises ConfigError naming the values)."""
        config = PipelineConfig.from_params(values)
        cameras = values["cameras"]
        if tuple(cameras) == SINGLE_CAMERA:
            return config, types.MappingProxyType({"": config})
        configs = {cam: PipelineConfig.from_params(values, camera=cam) for cam in cameras}
        check_camera_poses(configs)
        return config, types.MappingProxyType(configs)

    # -- the current state ----------------------------------------------------------------
    @property
    def config(self) -> PipelineConfig:
        """The current global snapshot (immutable: read it once per frame)."""
        return self._config

    @property
    def configs(self) -> Configs:
        """The current snapshot of every camera, by name (immutable as a whole: read it once
        per cycle; it is replaced, never changed, when parameters change)."""
        return self._configs

    def camera_config(self, camera: str) -> PipelineConfig:
        """The current snapshot of ``camera`` (the global one for unknown names)."""
        return self._configs.get(camera, self._config)

    def camera_value(self, camera: str, name: str) -> Any:
        """Camera ``camera``'s value of ``name`` (its own ``camera.name`` where declared)."""
        with self._lock:
            return self._values.get(f"{camera}.{name}" if camera else name,
                                    self._values[name])

    @property
    def specs(self) -> Mapping[str, ParamSpec]:
        """Every declared entry of the table, the per-camera ones included."""
        return types.MappingProxyType(self._specs)

    @property
    def values(self) -> dict[str, Any]:
        """A copy of the current parameter values."""
        with self._lock:
            return dict(self._values)

    def __getitem__(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def on_change(self, listener: Callable[[PipelineConfig, dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    # -- run-time changes -----------------------------------------------------------------
    def _pre_set(self, params: list[Parameter]) -> list[Parameter]:
        return [_coerced(p, self._specs) for p in params]

    def _changes(self, params: list[Parameter]) -> dict[str, Any]:
        changes = {}
        for param in params:
            spec = self._specs.get(param.name)
            if spec is not None:
                changes[param.name] = spec.validate(_coerced(param, self._specs).value)
        return changes

    def check(self, params: list[Parameter]) -> str | None:
        """None when the values, all together, are acceptable; else the reason."""
        try:
            changes = self._changes(params)
            if changes:
                with self._lock:
                    candidate = {**self._values, **changes}
                self._snapshots(candidate)
        except ConfigError as exc:
            return str(exc)
        return None

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        """Validate only (ros2/demos): the values and their combination with the others."""
        problem = self.check(params)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _post_set(self, params: list[Parameter]) -> None:
        """Apply: the next snapshot, swapped in as a whole (workers hold the old one until
        their next frame)."""
        changes = self._changes(params)
        if not changes:
            return
        with self._lock:
            old = self._values
            values = {**old, **changes}
            config, configs = self._snapshots(values)
            self._values = values
            self._config, self._configs = config, configs
        changed = {k: v for k, v in changes.items() if old.get(k) != v}
        if changed:
            self.node.get_logger().info(
                "parameters updated: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()))
            for listener in self._listeners:
                listener(config, changed)

    # -- SetParameters served "together" --------------------------------------------------
    def _individual_problem(self, param: Parameter) -> str | None:
        node = self.node
        if not node.has_parameter(param.name):
            return f"parameter {param.name} is not declared: " + \
                unknown_parameter_message(param.name, self._specs)
        if node.describe_parameter(param.name).read_only:
            return f"Trying to set a read-only parameter: {param.name}."
        spec = self._specs.get(param.name)
        if spec is not None:
            try:
                spec.validate(_coerced(param, self._specs).value)
            except ConfigError as exc:
                return str(exc)
        return None

    def set_together(self, params: list[Parameter]) -> list[SetParametersResult]:
        """A non-atomic request, validated together: every parameter that is acceptable on its
        own is set in one atomic step (or, if their combination is not, none of them); the
        others are refused with their own reasons."""
        results: list[SetParametersResult | None] = [None] * len(params)
        group = []
        for i, param in enumerate(params):
            problem = self._individual_problem(param)
            if problem:
                results[i] = SetParametersResult(successful=False, reason=problem)
            else:
                group.append(i)
        if group:
            try:
                res = self.node.set_parameters_atomically([params[i] for i in group])
            except ParameterNotDeclaredException as exc:
                res = SetParametersResult(successful=False, reason=str(exc))
            for i in group:
                results[i] = res
        return [r for r in results if r is not None]

    def _serve_set_parameters_together(self) -> None:
        """Route the node's SetParameters service through :meth:`set_together`."""
        for srv in self.node.services:
            if srv.srv_type is SetParameters and srv.srv_name.endswith("/set_parameters"):
                def handle(request: Any, response: Any) -> Any:
                    params = [Parameter.from_parameter_msg(p) for p in request.parameters]
                    response.results = self.set_together(params)
                    return response

                srv.callback = handle


# The table itself lives in the core; these names stay importable from here too.
__all__ = ["PARAMS", "PARAMS_BY_NAME", "ParamSpec", "ParameterBridge", "StartupError",
           "descriptor", "params_yaml"]


if __name__ == "__main__":
    print(params_yaml(), end="")
