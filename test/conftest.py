"""Shared fixtures: paths to ../shared data (tests skip cleanly where it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "data" / "camvid"
BDD = SHARED / "data" / "bdd100k_samples"
CITYSCAPES = SHARED / "data" / "cityscapes_samples"
TWINLITENET_WEIGHTS = SHARED / "models" / "twinlitenet" / "best.pth"


def require(path: Path) -> Path:
    """Skip the calling test with a clear reason unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared data is not in a fresh clone)")
    return path


@pytest.fixture
def camvid_dir() -> Path:
    return require(CAMVID)


@pytest.fixture
def camvid_frame() -> np.ndarray:
    """One real 480x360 RGB driving frame from CamVid val."""
    import cv2

    frames = sorted((require(CAMVID) / "val").glob("*.png"))
    if not frames:
        pytest.skip("no CamVid val frames")
    return cv2.cvtColor(cv2.imread(str(frames[0]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
