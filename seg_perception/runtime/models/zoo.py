"""Imports every module that registers networks; add one line per new model family."""

from . import ddrnet, espnetv2, lightfpn, mobilenet, pidnet, tiny, twinlitenet  # noqa: F401

# The model the node and CLI use when asked for "default".
# mnv1_fpn_050: an ImageNet MobileNetV1-0.5 + FPN decoder distilled from the fine-tuned
# Cityscapes ESPNetv2 (espnetv2_camvid) on CamVid; weights/mnv1_fpn_050.json is its record.
# It replaced LightFPN (from scratch on CamVid): on the held-out drive 0006R0, under the same
# protocol, LightFPN scored 42.2 % and this recipe 47.3 %, at 1.28x LightFPN's time.
DEFAULT_MODEL = "mnv1_fpn_050"
