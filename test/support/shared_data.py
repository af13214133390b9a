"""Where the ../shared data lives; tests that need it skip cleanly where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# SEG_SHARED_DIR points elsewhere (e.g. a git worktree whose parent has no shared/).
SHARED = Path(os.environ.get("SEG_SHARED_DIR") or REPO.parent / "shared")
CAMVID = SHARED / "data" / "camvid"
BDD = SHARED / "data" / "bdd100k_samples"
CITYSCAPES = SHARED / "data" / "cityscapes_samples"
TWINLITENET_WEIGHTS = SHARED / "models" / "twinlitenet" / "best.pth"
ESPNETV2_CITY_WEIGHTS = SHARED / "models" / "espnetv2_city" / "espnetv2_s_2.0_city_1024x512.pth"


def require(path: Path) -> Path:
    """Skip the calling test with a clear reason unless ``path`` exists."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared data is not in a fresh clone)")
    return path
CORAL = SHARED / "models" / "coral"
