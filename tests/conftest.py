"""Shared fixtures: the real data in ../shared (or $REID_SHARED) and small models trained by the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from reid.data import load_market
from reid.paths import shared_root


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "datasets" / "cuhk03_p1").is_dir():
        pytest.fail(f"shared data not found at {root}; set REID_SHARED to the folder holding datasets/cuhk03_p1")
    return root


@pytest.fixture(scope="session")
def cuhk03_root(shared: Path) -> Path:
    return shared / "datasets" / "cuhk03_p1"


@pytest.fixture(scope="session")
def cuhk03(cuhk03_root: Path):
    return load_market(cuhk03_root)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, cuhk03_root: Path) -> Path:
    """Weights from a real (short) training run of this project's trainer on 12 identities."""
    from reid.train import main

    out = tmp_path_factory.mktemp("tiny_run")
    assert main(["--data", str(cuhk03_root), "--out", str(out), "--epochs", "1", "--num-ids", "12",
                 "--eval-every", "0", "--device", "cpu"]) == 0
    return out / "model.pt"
