"""The core's Python ``logging`` (and Python warnings) through the node's rclpy logger.

The ROS-free core logs through ``logging`` (``seg_perception.runtime.*``). In a node nobody
configures Python logging, so those records reach :data:`logging.lastResort`, which prints
the bare message to stderr: no severity, no node name, no timestamp, not on /rosout, and not
rate-limited ("the camera sees none of the grid's cells" arrived that way). :func:`route_to`
attaches a handler that hands every record to the node's logger at the matching severity,
rate-limits warnings and errors per kind of problem, and (optionally) sends Python warnings
(numpy's RuntimeWarning, DeprecationWarning, ...) the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from seg_perception.runtime.stats import WarningLimiter, problem_kind

# rcutils severities (rclpy.logging.LoggingSeverity values) -> Python logging levels.
_FROM_RCUTILS = {10: logging.DEBUG, 20: logging.INFO, 30: logging.WARNING, 40: logging.ERROR,
                 50: logging.CRITICAL}


class RclpyLogHandler(logging.Handler):
    """Forwards records to an rclpy logger (anything with debug/info/warning/error/fatal).

    Warnings and errors pass through ``limiter`` keyed on the logger name and the kind of the
    message (its format string without the values), so a repeating problem gives one line per
    period saying how many were suppressed.
    """

    def __init__(self, ros_logger: Any, limiter: WarningLimiter | None = None,
                 level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.ros_logger = ros_logger
        self.limiter = limiter if limiter is not None else WarningLimiter(5.0)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            if record.levelno >= logging.WARNING:
                key = f"{record.name}:{problem_kind(str(record.msg))}"
                suppressed = self.limiter.check(key)
                if suppressed is None:
                    return
                if suppressed:
                    text += f" ({suppressed} more since the last warning)"
            name = record.name
            if name.startswith("seg_perception."):
                name = name[len("seg_perception."):]
            text = f"[{name}] {text}"
            log = self.ros_logger
            if record.levelno >= logging.CRITICAL:
                log.fatal(text)
            elif record.levelno >= logging.ERROR:
                log.error(text)
            elif record.levelno >= logging.WARNING:
                log.warning(text)
            elif record.levelno >= logging.INFO:
                log.info(text)
            else:
                log.debug(text)
        except Exception:  # a logging failure must never take the frame (or node) down
            self.handleError(record)


def python_level(ros_logger: Any) -> int:
    """The Python logging level matching an rclpy logger's effective severity."""
    try:
        return _FROM_RCUTILS.get(int(ros_logger.get_effective_level()), logging.INFO)
    except Exception:  # not an rclpy logger (tests' fakes)
        return logging.INFO


def route_to(ros_logger: Any, logger_name: str = "seg_perception",
             capture_warnings: bool = True,
             limiter: WarningLimiter | None = None) -> RclpyLogHandler:
    """Send ``logger_name``'s records (and with ``capture_warnings`` Python warnings) to
    ``ros_logger``; returns the handler for :func:`unroute`.

    The Python level follows the rclpy logger's (``--ros-args --log-level debug`` shows the
    core's debug lines too). Records stop propagating to the root logger, so nothing is
    printed twice.
    """
    handler = RclpyLogHandler(ros_logger, limiter)
    target = logging.getLogger(logger_name)
    target.addHandler(handler)
    target.setLevel(python_level(ros_logger))
    target.propagate = False
    if capture_warnings:
        logging.captureWarnings(True)
        warn_log = logging.getLogger("py.warnings")
        warn_log.addHandler(handler)
        warn_log.propagate = False
    return handler


def unroute(handler: RclpyLogHandler, logger_name: str = "seg_perception") -> None:
    """Undo :func:`route_to` (at node shutdown)."""
    target = logging.getLogger(logger_name)
    target.removeHandler(handler)
    target.propagate = True
    warn_log = logging.getLogger("py.warnings")
    if handler in warn_log.handlers:
        warn_log.removeHandler(handler)
        warn_log.propagate = True
        logging.captureWarnings(False)
