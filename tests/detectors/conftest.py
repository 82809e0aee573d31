"""Real inputs for the detector tests: the shared YOLO weights and videos, and the images ultralytics ships.

Frames are decoded once per session and only the stretches the tests use; detections of the indoor
stretch are computed once and shared by the tracking tests (the 320 model: ids, not accuracy, matter there).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reid.paths import shared_root
from tests.detectors.clips import EPFL_C0, INDOOR, INDOOR_CROSSING, read_frames


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} not found; set REID_SHARED to the folder holding weights/ and video/")
    return path


@pytest.fixture(scope="session")
def weights_640() -> Path:
    return _need(shared_root() / "weights" / "yolov8n_int8.onnx")


@pytest.fixture(scope="session")
def weights_320() -> Path:
    return _need(shared_root() / "weights" / "yolo11n_int8_320.onnx")


@pytest.fixture(scope="session")
def assets() -> Path:
    """ultralytics' bundled images, found without importing ultralytics outside ``detectors``."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin is not None, "ultralytics is not installed"
    return Path(spec.origin).parent / "assets"


@pytest.fixture(scope="session")
def detector_320(weights_320):
    from detectors.yolo import PersonDetector

    return PersonDetector(weights_320)


@pytest.fixture(scope="session")
def indoor_frames() -> list[np.ndarray]:
    return read_frames(_need(shared_root() / INDOOR), *INDOOR_CROSSING)


@pytest.fixture(scope="session")
def indoor_dets(detector_320, indoor_frames):
    """Detections of every frame of the crossing, batched four frames at a time."""
    out = []
    for i in range(0, len(indoor_frames), 4):
        out.extend(detector_320.detect(indoor_frames[i:i + 4]))
    return out


@pytest.fixture(scope="session")
def epfl_frames() -> list[np.ndarray]:
    """Frames 1000-1039 of EPFL campus4 view 0: three to four people in the courtyard."""
    return read_frames(_need(shared_root() / EPFL_C0), 1000, 1040)


CROWD_C1 = "video/epfl_terrace1_crowd/terrace1-c1.mp4"
CROWD_GT = "video/epfl_terrace1_crowd/gt"


@pytest.fixture(scope="session")
def crowd_c1(shared, detector_320):
    """The crowded clip's second view at 5 detections/s (every 5th frame of 30 s): detections and embeddings."""
    from detectors.crops import crop_views
    from trt_engines.embedder import build_embedder

    path = shared / CROWD_C1
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    frames = read_frames(path, 0, 750)[::5]
    embedder = build_embedder("onnxruntime", "fp32")
    rows = []
    for frame, dets in zip(frames, detector_320.detect(frames), strict=True):
        crops = crop_views(frame, dets.xyxy, 0.0)
        rows.append((frame, dets, embedder.embed(crops) if len(crops) else np.zeros((0, 1024), np.float32)))
    return rows


@pytest.fixture(scope="session")
def crowd_c1_tracker_alone(crowd_c1, shared):
    """Scores the per-camera tracker alone on :func:`crowd_c1`: ``score(appearance, gate=None, refresh_s=1.0)``
    gives ``pipeline.evaluate_mtmc``'s per-camera figures plus ``track_bound`` (each track labelled with its main
    person: what perfect linking would give) and ``embedded``, how many detections the tracker wanted embedded."""
    from detectors.appearance import AppearanceConfig
    from detectors.tracking import CameraTracker
    from pipeline.evaluate_mtmc import MotSequence, evaluate, loss_breakdown, read_mot

    def score(appearance: bool, gate=None, refresh_s: float = 1.0) -> dict:
        tracker = CameraTracker("c1", frame_rate=5, lost_timeout_s=1.5,
                                appearance=AppearanceConfig(enabled=appearance, refresh_s=refresh_s), gate=gate)
        seq, embedded = MotSequence(), 0
        for k, (frame, dets, embs) in enumerate(crowd_c1):
            embedded += int(tracker.embedding_wanted(dets, k / 5).sum())
            tracker.update(frame, 5 * k, k / 5, dets, embs)
            t = tracker.tracks
            if len(t.xyxy):
                seq.ids[5 * k + 1] = t.track_id.astype(np.int64)
                seq.boxes[5 * k + 1] = np.concatenate([t.xyxy[:, :2], t.xyxy[:, 2:] - t.xyxy[:, :2]], 1).astype(float)
        gt = {"c1": read_mot(shared / CROWD_GT / "c1.txt")}
        frames = {"c1": [5 * k + 1 for k in range(len(crowd_c1))]}
        out = evaluate({"c1": seq}, gt, frames)["per_camera"]["c1"]
        out["track_bound"] = loss_breakdown({"c1": seq}, gt, frames)["track_bound"]["mtmc_idf1"]
        out["embedded"] = embedded
        return out

    return score
