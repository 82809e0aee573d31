"""The ground-plane gate of a calibrated camera's tracker: by hand on a floor seen from above, and on the crowded
terrace1 clip, where it must only take away matches that were wrong."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.ground import FOOT_SLACK, GroundGate
from detectors.tracking import CameraTracker
from detectors.types import Detections
from reid.identity.geometry import Homography
from reid.paths import PROJECT_ROOT

FLOOR = Homography(np.eye(3))  # image = ground: a camera looking straight down, 1 unit per pixel


def _gate() -> GroundGate:
    return GroundGate(FLOOR, different_place=75.0, max_speed=150.0)


def test_a_match_no_walk_could_make_is_refused():
    """Tracks seen one frame ago (0.2 s: 75 + 30 units plus a tenth of each box's height, 125) and three frames
    ago (0.6 s: 185)."""
    gate = _gate()
    tracks = np.array([[0, 0, 20, 100], [0, 0, 20, 100]], float)  # feet at (10, 100)
    dets = np.array([[0, 180, 20, 280],  # feet 180 away: over 125 after 0.2 s, under 185 after 0.6 s
                     [100, 0, 120, 100],  # 100 away: within 75 + 30 + 10 + 10
                     [300, 0, 320, 100]], float)  # 300 away: too far for both
    dists = np.full((2, 3), 0.4)
    out = gate.veto(dists, tracks, np.array([0.2, 0.6]), dets)
    assert out.tolist() == [[1.0, 0.4, 1.0], [0.4, 0.4, 1.0]]
    # The slack is FOOT_SLACK of each box's height (10 + 10 here): 120 apart passes, 126 does not.
    apart = [np.array([[d, 0, d + 20, 100]], float) for d in (120, 126)]
    assert [gate.veto(np.full((1, 1), 0.4), tracks[:1], np.array([0.2]), b)[0, 0] for b in apart] == [0.4, 1.0]
    assert FOOT_SLACK * 100 == 10


def test_a_detection_that_may_hide_its_feet_is_never_refused():
    """Two overlapping detections: either one's bottom edge may be another person's legs."""
    dets = np.array([[300, 0, 320, 100], [305, 10, 325, 110]], float)
    out = _gate().veto(np.full((1, 2), 0.4), np.array([[0, 0, 20, 100]], float), np.array([0.2]), dets)
    assert out.tolist() == [[0.4, 0.4]]


def test_points_beyond_the_horizon_are_never_refused():
    """A homography whose horizon crosses the image: a box whose feet lie above it has no ground position."""
    tilted = Homography([[1, 0, 0], [0, 1, 0], [0, 0.01, -0.5]])  # v < 50 lies beyond the horizon
    gate = GroundGate(tilted, 75.0, 150.0)
    tracks = np.array([[0, 0, 20, 30]], float)  # feet at v = 30: beyond
    out = gate.veto(np.full((1, 1), 0.4), tracks, np.array([0.2]), np.array([[500, 100, 520, 200]], float))
    assert out.tolist() == [[0.4]]


def test_the_tracker_keeps_two_people_apart_who_meet_in_the_image_only():
    """A person stands still; then the detector sees only a box that overlaps theirs (IoU 0.43) but whose feet stand
    200 units further (someone behind them in a camera's view, while they are hidden): IoU alone carries the track
    onto the other person, the gate starts a new track."""
    frame = np.zeros((600, 600, 3), np.uint8)
    conf = np.array([0.9], np.float32)
    ids = {}
    for gated in (False, True):
        tracker = CameraTracker("c", frame_rate=5, lost_timeout_s=1.5, gate=_gate() if gated else None)
        for k in range(5):  # a person standing still, feet at y = 200
            tracker.update(frame, k, k / 5, Detections(np.array([[100, 50, 160, 200]], np.float32), conf))
        tracker.update(frame, 5, 1.0, Detections(np.array([[100, 50, 160, 400]], np.float32), conf))
        tracker.update(frame, 6, 1.2, Detections(np.array([[100, 50, 160, 400]], np.float32), conf))
        ids[gated] = int(tracker.tracks.track_id[0]) if len(tracker.tracks.track_id) else None
    assert ids[False] == 1  # IoU alone carried the first person's track onto the second
    assert ids[True] not in (None, 1)


@pytest.mark.slow
def test_on_the_crowded_clip_the_gate_only_removes_wrong_matches(crowd_c1_tracker_alone):
    """The crowded clip's second view with its real calibration and geometry: the tracks with the gate are at
    least as pure (track bound: each track labelled with its main person; 0.757 to 0.761 when written) and the
    tracker alone scores about as well (0.614 to 0.616 with the hand-set rules, 75 and 150; 0.613 to 0.601 with
    the site check's, 64.3 and 140, session 21). A refused match starts a new track (21 to 23 tracks), which the
    linking joins: the fragments cost the raw track ids a little, never the tracks' purity."""
    from pipeline.config import load_config

    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml")
    cam = next(c for c in cfg.cameras if c.id == "c1")
    gate = cfg.ground_gate(cam.id)
    assert gate is not None and (gate.different_place, gate.max_speed) == (cfg.geometry.different_place,
                                                                           cfg.geometry.max_speed)
    assert np.array_equal(gate.homography.matrix, cam.ground().matrix)
    plain = crowd_c1_tracker_alone(appearance=True)
    gated = crowd_c1_tracker_alone(appearance=True, gate=gate)
    assert gated["track_bound"] >= plain["track_bound"], (plain, gated)
    assert gated["idf1"] >= plain["idf1"] - 0.02, (plain, gated)


def test_only_calibrated_cameras_with_the_gate_on_get_one(shared):
    from pipeline.config import load_config

    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1.yaml")
    assert cfg.ground_gate("c0") is not None
    off = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"ground_gate": False})})
    assert off.ground_gate("c0") is None
    campus = load_config(PROJECT_ROOT / "configs" / "cams.example.yaml")  # no calibration
    assert all(campus.ground_gate(c.id) is None for c in campus.cameras)
