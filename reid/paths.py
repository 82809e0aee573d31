"""Where the project finds data it does not ship: one environment variable, ``REID_SHARED``.

The default is ``../shared`` next to the project's root (the layout of every developer machine and CI), so
commands work from any working directory without configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "REID_SHARED"
DEFAULT_WEIGHTS = PROJECT_ROOT / "reid" / "weights" / "hacnn_joint.pt"  # Market-1501 + cuhk03_p1 (weights README)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")  # image files the datasets and image-folder cameras read


def shared_root() -> Path:
    """Root of the shared data: ``$REID_SHARED`` or ``<project>/../shared``."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT.parent / "shared"


def default_dataset() -> Path:
    return shared_root() / "datasets" / "cuhk03_p1"
