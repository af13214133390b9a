"""Imports every module that registers networks; add one line per new model family."""

from . import ddrnet, espnetv2, lightfpn, mobilenet, pidnet, tiny, twinlitenet  # noqa: F401

# The model the node and CLI use when asked for "default".
# LightFPN: CPU real-time, trained on CamVid (weights shipped as camvid_default.safetensors).
DEFAULT_MODEL = "lightfpn"
