"""ROS-free training and evaluation: datasets, augmentation, losses, metrics, the trainer.

Nothing here imports ROS; the ``train`` and ``eval`` verbs of ``seg-perception`` are thin
wrappers over :func:`~.trainer.train` and :func:`~.evaluate.evaluate`.
"""

from seg_perception.training.datasets import (
    CITYSCAPES_ID_TO_TRAINID,
    CamVidDataset,
    CityscapesDataset,
    SegDataset,
    cityscapes_label_to_train_id,
    open_dataset,
)
from seg_perception.training.metrics import ConfusionMatrix

__all__ = [
    "CITYSCAPES_ID_TO_TRAINID",
    "CamVidDataset",
    "CityscapesDataset",
    "ConfusionMatrix",
    "SegDataset",
    "cityscapes_label_to_train_id",
    "open_dataset",
]
