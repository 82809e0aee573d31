"""The annotated terrace1 clips as a user's site: configs pointing at copies of their videos and homographies only,
so that a tool given them cannot reach the ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from reid.paths import PROJECT_ROOT, shared_root

CROWD = shared_root() / "video" / "epfl_terrace1_crowd"
SPARSE = shared_root() / "video" / "epfl_terrace1"


def needs(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} is not in ../shared")


def site_config(tmp: Path, clip: Path, name: str) -> Path:
    """The shipped config of ``clip`` pointing at a copy of its videos and homographies only: no ground truth
    lies anywhere near what the adaptation is given."""
    src = {"epfl_terrace1": "terrace1.yaml", "epfl_terrace1_crowd": "terrace1_crowd.yaml"}[clip.name]
    data = yaml.safe_load((PROJECT_ROOT / "configs" / src).read_text())
    folder = tmp / name
    folder.mkdir()
    for cam in data["cameras"]:
        for key in ("source", "homography"):
            f = clip / Path(cam[key]).name
            shutil.copy(f, folder / f.name)
            cam[key] = str(folder / f.name)
    data["detector"]["weights"] = str(shared_root() / "weights" / Path(data["detector"]["weights"]).name)
    data["name"] = name
    path = folder / "cams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
