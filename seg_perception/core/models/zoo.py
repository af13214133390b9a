"""Imports every module that registers networks; add one line per new model family."""

from . import tiny  # noqa: F401

# The model the node and CLI use when asked for "default".
DEFAULT_MODEL = "tiny_seg"
