"""Appearance in the per-camera association: the similarity scale, a crossing, and the crowded terrace1 clip."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.appearance import AppearanceConfig, SimilarityScale
from detectors.tracking import CameraTracker, TrackerConfigError, build_tracker, tracker_args
from detectors.types import Detections


def test_scale_uses_priors_until_enough_samples_then_its_own_medians():
    scale = SimilarityScale(AppearanceConfig(calibration_samples=10))
    assert scale.levels == (0.95, 0.62)
    assert scale.cost(np.array([0.95, 0.62, 1.0, 0.0])).tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0])
    for _ in range(25):  # levels are recomputed every 25 observations
        scale.observe(np.full(4, 0.8), np.full(4, 0.3))
    assert scale.levels == pytest.approx((0.8, 0.3))
    assert float(scale.cost(np.array([0.55]))[0]) == pytest.approx(0.5)


def test_scale_keeps_priors_for_an_embedding_that_does_not_separate_people():
    scale = SimilarityScale(AppearanceConfig(calibration_samples=10))
    for _ in range(25):
        scale.observe(np.full(4, 0.7), np.full(4, 0.68))
    assert scale.levels == (0.95, 0.62)


def _bounce(appearance: bool) -> list[dict[int, str]]:
    """Two people meet head-on and both turn back: the Kalman predictions carry each track onto the other person."""
    tracker = CameraTracker("c", frame_rate=5, lost_timeout_s=1.5, appearance=AppearanceConfig(enabled=appearance))
    looks = np.eye(2, 8, dtype=np.float32)  # person A, person B
    frame = np.zeros((200, 400, 3), np.uint8)
    owners = []
    for k in range(20):
        xa = 100 + 10 * k if k <= 10 else 200 - 10 * (k - 10)
        xb = 300 - 10 * k if k <= 10 else 200 + 10 * (k - 10)
        boxes = np.array([[xa - 20, 50, xa + 20, 150], [xb - 20, 50, xb + 20, 150]], np.float32)
        tracker.update(frame, k, k / 5, Detections(boxes, np.array([0.9, 0.9], np.float32)), looks)
        owners.append({int(t): "A" if abs(float(x) - (xa - 20)) < 1e-3 else "B"
                       for t, x in zip(tracker.tracks.track_id, tracker.tracks.xyxy[:, 0], strict=True)})
    return owners


def test_appearance_keeps_two_people_apart_where_motion_swaps_them():
    plain, with_app = _bounce(False), _bounce(True)
    assert plain[5] == with_app[5] == {1: "A", 2: "B"}
    assert plain[19] == {1: "B", 2: "A"}  # the swap this tracker exists to prevent
    assert with_app[19] == {1: "A", 2: "B"}


def test_appearance_needs_one_embedding_per_detection_and_bytetrack():
    tracker = CameraTracker("c", frame_rate=5, appearance=AppearanceConfig())
    dets = Detections(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9], np.float32))
    with pytest.raises(ValueError, match="one embedding per detection"):
        tracker.update(np.zeros((50, 50, 3), np.uint8), 0, 0.0, dets, None)
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert tracker.update(np.zeros((50, 50, 3), np.uint8), 1, 0.2, empty, np.zeros((0, 8), np.float32)) == []
    with pytest.raises(TrackerConfigError, match="needs the bytetrack tracker"):
        build_tracker("botsort", tracker_args("botsort"), AppearanceConfig())


def _walk(tracker: CameraTracker, k: int, xs: list[float], looks: np.ndarray | None = None) -> np.ndarray:
    """Frame ``k`` (5/s) with one 40 px wide person at each x; returns which detections the tracker wanted
    embedded, after updating it with ``looks`` (default: one distinct look per person)."""
    boxes = np.array([[x - 20, 50, x + 20, 150] for x in xs], np.float32).reshape(-1, 4)
    dets = Detections(boxes, np.full(len(xs), 0.9, np.float32))
    wanted = tracker.embedding_wanted(dets, k / 5)
    tracker.update(np.zeros((200, 600, 3), np.uint8), k, k / 5, dets,
                   np.eye(len(xs), 8, dtype=np.float32) if looks is None else looks)
    return wanted


def test_only_detections_appearance_can_decide_are_embedded_between_refreshes():
    tracker = CameraTracker("c", frame_rate=5, lost_timeout_s=1.5, appearance=AppearanceConfig(refresh_s=1.0))
    apart = [100.0, 400.0]
    assert _walk(tracker, 0, apart).tolist() == [True, True]  # the first frame: every detection
    assert _walk(tracker, 1, apart).tolist() == [False, False]  # one track each, nothing else near: IoU decides
    assert _walk(tracker, 2, apart + [250.0]).tolist() == [False, False, True]  # a newcomer is embedded
    assert _walk(tracker, 3, apart + [250.0]).tolist() == [False, False, True]  # ... until its track is confirmed
    assert _walk(tracker, 4, apart + [250.0]).tolist() == [False, False, False]
    assert _walk(tracker, 5, apart).tolist() == [True, True]  # a second since the last full frame: refresh
    assert _walk(tracker, 6, [100.0, 130.0]).tolist() == [True, True]  # the second touches the first's track
    assert _walk(tracker, 7, [100.0]).tolist() == [True]  # still touching the newcomer's unconfirmed track
    assert _walk(tracker, 8, [100.0, 400.0]).tolist() == [False, True]  # the lost track at 400: a re-find
    every = CameraTracker("c", frame_rate=5, appearance=AppearanceConfig(refresh_s=0))
    assert all(_walk(every, k, apart).all() for k in range(4))


def test_the_tracker_reads_only_the_rows_it_wanted():
    """Rows it did not want may hold anything: through a crossing that appearance decides (two people meet head-on
    and turn back), the tracks and their appearances come out the same as with zeros there."""
    runs = []
    for junk in (0.0, 1.0):
        tracker = CameraTracker("c", frame_rate=5, lost_timeout_s=1.5, appearance=AppearanceConfig())
        out, left_out = [], 0
        for k in range(20):
            xa = 100 + 10 * k if k <= 10 else 200 - 10 * (k - 10)
            xb = 300 - 10 * k if k <= 10 else 200 + 10 * (k - 10)
            boxes = np.array([[xa - 20, 50, xa + 20, 150], [xb - 20, 50, xb + 20, 150]], np.float32)
            dets = Detections(boxes, np.full(2, 0.9, np.float32))
            wanted = tracker.embedding_wanted(dets, k / 5)
            left_out += int((~wanted).sum())
            looks = np.where(wanted[:, None], np.eye(2, 8, dtype=np.float32), junk).astype(np.float32)
            tracker.update(np.zeros((200, 400, 3), np.uint8), k, k / 5, dets, looks)
            out.append((tracker.tracks.track_id.tolist(), tracker.tracks.xyxy.tolist()))
        apps = {t.track_id: t.appearance.tolist() for t in tracker._tracker.tracked_stracks}
        runs.append((out, apps, left_out))
    assert runs[0][2] > 0  # some detections were left out
    assert runs[0] == runs[1]
    owners = runs[0][0][-1]  # and appearance kept the two apart, as when every detection is embedded
    assert owners[0] == [1, 2] and owners[1][0][0] < owners[1][1][0]


def test_appearance_tracks_the_crowded_clip_with_fewer_swaps(crowd_c1_tracker_alone):
    """About six people in view, crossing all the time: the tracker alone (raw track ids) gains identity."""
    plain = crowd_c1_tracker_alone(appearance=False)
    with_app = crowd_c1_tracker_alone(appearance=True)
    assert with_app["idf1"] >= plain["idf1"] + 0.05, (plain, with_app)
    assert with_app["id_switches"] < plain["id_switches"]


def test_the_crowded_clip_needs_fewer_embeddings_than_detections(crowd_c1, crowd_c1_tracker_alone):
    """Embedding only where appearance can decide leaves crops out even with six people crossing, and keeps most
    of what embedding every detection gains over motion alone."""
    plain = crowd_c1_tracker_alone(appearance=False)
    every = crowd_c1_tracker_alone(appearance=True, refresh_s=0)
    lazy = crowd_c1_tracker_alone(appearance=True)
    detections = sum(len(dets) for _, dets, _ in crowd_c1)
    assert every["embedded"] == detections
    assert lazy["embedded"] < 0.8 * detections, (lazy["embedded"], detections)
    assert lazy["idf1"] - plain["idf1"] >= 0.7 * (every["idf1"] - plain["idf1"]), (plain, every, lazy)
