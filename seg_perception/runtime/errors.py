"""The runtime's error for a parameter value that cannot be used.

A module of its own so that the geometry (the drivable map's configuration) raises the same
:class:`ConfigError` as the parameter table without importing the config package, which
imports the geometry.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A parameter value, or a combination of values, that cannot be used (says which)."""


__all__ = ["ConfigError"]
