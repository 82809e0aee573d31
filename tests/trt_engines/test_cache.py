"""The engine cache's rebuild rule, with a stand-in builder: it needs no TensorRT and no GPU, so it runs everywhere.

Both engine kinds (HA-CNN through the TensorRT API, YOLO through ultralytics) go through
``trt_engines.cache.reuse_or_build``; their real builds are tested in test_embedder.py and
tests/detectors/test_yolo.py, which skip without TensorRT and a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trt_engines.cache import cache_dir, file_hash, ignored_dir, read_sidecar, reuse_or_build, stale_reason

FINGERPRINT = {"weights_sha256": "ab" * 32, "precision": "fp16", "max_batch": 8, "tensorrt": "10.3.0",
               "gpu": "NVIDIA H100"}


class Builder:
    """Writes a fake engine and counts its calls; ``fail`` makes it break halfway, as a crashed build would."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self, engine: Path) -> None:
        self.calls += 1
        engine.write_bytes(b"engine %d" % self.calls)
        if self.fail:
            raise RuntimeError("build interrupted")


@pytest.fixture
def engine(tmp_path) -> Path:
    return tmp_path / "model.engine"


def test_built_once_then_reused(engine):
    build = Builder()
    assert reuse_or_build(engine, FINGERPRINT, build, extra={"source": "w.pt"}) == engine
    assert build.calls == 1 and engine.read_bytes() == b"engine 1"
    recorded = read_sidecar(engine)
    assert {k: recorded[k] for k in FINGERPRINT} == FINGERPRINT and recorded["source"] == "w.pt"
    assert "built_s" in recorded  # notes beside the fingerprint never make the engine stale
    assert reuse_or_build(engine, FINGERPRINT, build) == engine
    assert build.calls == 1 and stale_reason(engine, FINGERPRINT) is None


@pytest.mark.parametrize("field", sorted(FINGERPRINT))
def test_any_changed_field_rebuilds(engine, field):
    build = Builder()
    reuse_or_build(engine, FINGERPRINT, build)
    changed = {**FINGERPRINT, field: "something else"}
    assert stale_reason(engine, changed) == f"changed: {field}"
    reuse_or_build(engine, changed, build)
    assert build.calls == 2 and read_sidecar(engine)[field] == "something else"
    reuse_or_build(engine, changed, build)
    assert build.calls == 2


def test_a_new_fingerprint_field_rebuilds_old_engines(engine):
    build = Builder()
    reuse_or_build(engine, FINGERPRINT, build)
    assert stale_reason(engine, {**FINGERPRINT, "compute_capability": "9.0"}) == "changed: compute_capability"


def test_missing_or_unreadable_files_rebuild(engine):
    build = Builder()
    reuse_or_build(engine, FINGERPRINT, build)
    engine.with_suffix(".json").unlink()
    assert stale_reason(engine, FINGERPRINT) == "no readable sidecar"
    reuse_or_build(engine, FINGERPRINT, build)
    engine.with_suffix(".json").write_text("{not json")
    assert stale_reason(engine, FINGERPRINT) == "no readable sidecar"
    reuse_or_build(engine, FINGERPRINT, build)
    engine.unlink()
    assert stale_reason(engine, FINGERPRINT) == "no engine"
    reuse_or_build(engine, FINGERPRINT, build)
    assert build.calls == 4 and stale_reason(engine, FINGERPRINT) is None


def test_force_rebuilds_and_an_interrupted_build_is_never_reused(engine):
    build = Builder()
    reuse_or_build(engine, FINGERPRINT, build)
    reuse_or_build(engine, FINGERPRINT, build, force=True)
    assert build.calls == 2
    build.fail = True
    with pytest.raises(RuntimeError, match="interrupted"):
        reuse_or_build(engine, FINGERPRINT, build, force=True)
    assert engine.is_file() and stale_reason(engine, FINGERPRINT) == "no readable sidecar"  # half-written engine
    build.fail = False
    reuse_or_build(engine, FINGERPRINT, build)
    assert build.calls == 4


def test_cache_folders_are_git_ignored_and_hashes_are_content_hashes(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_ENGINE_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    assert (tmp_path / "cache" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert ignored_dir(tmp_path / "engines") == tmp_path / "engines" and (tmp_path / "engines" / ".gitignore").is_file()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    assert file_hash(a) == file_hash(b) and len(file_hash(a)) == 16 and len(file_hash(a, length=None)) == 64
    b.write_bytes(b"weights2")
    assert file_hash(a) != file_hash(b)
