"""Ground-plane geometry: calibration checks, projection on the real EPFL terrace homographies, the judge."""

from __future__ import annotations

import numpy as np
import pytest

from reid.identity.geometry import (
    AGREE,
    DISAGREE,
    UNKNOWN,
    CalibrationError,
    GeometryConfig,
    GroundTrack,
    Homography,
    foot_points,
    judge,
)

CFG = GeometryConfig(same_place=35, different_place=70, max_speed=150)


@pytest.mark.parametrize("matrix,message", [
    ([[1, 0], [0, 1]], "3x3"),
    ([[1, 0, 0], [0, 1, 0], [0, 0, float("nan")]], "non-finite"),
    ([[1, 2, 3], [2, 4, 6], [0, 0, 1]], "singular"),
    ([["a", 0, 0], [0, 1, 0], [0, 0, 1]], "numeric"),
])
def test_bad_calibration_is_a_clear_error(matrix, message):
    with pytest.raises(CalibrationError, match=message):
        Homography(matrix)


def test_file_errors(tmp_path):
    with pytest.raises(CalibrationError, match="missing"):
        Homography.load("nope.txt", tmp_path)
    (tmp_path / "h.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(CalibrationError, match="3x3"):
        Homography.load("h.txt", tmp_path)


def test_terrace_views_agree_on_the_ground(shared):
    """The ground truth's feet of one person, seen from the two views at one frame, land close together."""
    root = shared / "video" / "epfl_terrace1"
    h0, h1 = (Homography.load(root / f"homography-c{i}.txt") for i in range(2))
    gt = {i: {} for i in range(2)}
    for i in range(2):
        for line in (root / "gt" / f"c{i}.txt").read_text().splitlines():
            f, pid, x, y, w, hh = (float(v) for v in line.split(",")[:6])
            gt[i][(int(f), int(pid))] = [x, y, x + w, y + hh]
    common = sorted(set(gt[0]) & set(gt[1]))[::25]
    g0, ok0 = h0.project(foot_points(np.array([gt[0][k] for k in common])))
    g1, ok1 = h1.project(foot_points(np.array([gt[1][k] for k in common])))
    assert ok0.all() and ok1.all()
    d = np.linalg.norm(g0 - g1, axis=1)
    assert np.median(d) < 30  # the dataset's note: the same person's feet land about 15-30 units apart


def test_points_above_the_horizon_have_no_ground_position(shared):
    h = Homography.load(shared / "video" / "epfl_terrace1" / "homography-c0.txt")
    # c0's horizon line (w = 0) crosses the image near v = 20: the top rows are sky, the bottom is the floor.
    _, valid = h.project(np.array([[180.0, 0.0], [180.0, 280.0]]))
    assert valid.tolist() == [False, True]
    # The same homography scaled by -1 is the same mapping: the ground side does not depend on the sign.
    flipped = Homography(-h.matrix)
    assert flipped.project(np.array([[180.0, 0.0], [180.0, 280.0]]))[1].tolist() == [False, True]


def track(points: list[tuple[float, float, float]]) -> GroundTrack:
    t = GroundTrack()
    for ts, x, y in points:
        t.add(ts, np.array([x, y]))
    return t


def test_judge_co_visible_tracks():
    a = track([(0.2 * i, 10.0 * i, 0) for i in range(10)])
    near = track([(0.2 * i + 0.01, 10.0 * i + 12, 5) for i in range(10)])
    far = track([(0.2 * i, 10.0 * i, 90) for i in range(10)])
    middle = track([(0.2 * i, 10.0 * i, 50) for i in range(10)])
    brief = track([(0.0, 0, 90), (0.2, 10, 90)])
    assert judge(a, near, CFG) == AGREE
    assert judge(a, far, CFG) == DISAGREE
    assert judge(a, middle, CFG) == UNKNOWN
    assert judge(a, brief, CFG) == UNKNOWN  # two moments together are fewer than min_common
    assert judge(a, GroundTrack(), CFG) == UNKNOWN


def test_judge_successive_tracks_by_walking_speed():
    first = track([(0.0, 0, 0), (1.0, 50, 0)])
    reachable = track([(3.0, 300, 0), (4.0, 350, 0)])  # 250 units in 2 s: within 150/s plus noise
    too_far = track([(3.0, 600, 0), (4.0, 650, 0)])  # 550 units in 2 s
    assert judge(first, reachable, CFG) == UNKNOWN
    assert judge(first, too_far, CFG) == DISAGREE
    assert judge(too_far, first, CFG) == DISAGREE  # order of the arguments does not matter


def test_ground_track_is_bounded_and_ordered():
    t = GroundTrack(maxlen=8)
    for i in range(100):
        t.add(float(i), np.array([i, i]))
    t.add(50.0, np.array([0, 0]))  # out of order: ignored
    assert len(t) == 8 and t.ts[0] == 92.0 and t.ts[-1] == 99.0


def test_config_checks_order():
    with pytest.raises(ValueError, match="different_place"):
        GeometryConfig(same_place=50, different_place=40, max_speed=1)


def test_one_point_projection_agrees_with_the_array_projection():
    h = Homography([[0.02, 0.001, -3.0], [0.0005, 0.03, -1.0], [0.0001, 0.002, 1.0]])
    pts = np.array([[10.0, 200.0], [300.0, 250.0], [150.0, -900.0]])  # the last one is beyond the horizon
    g, ok = h.project(pts)
    for p, gp, valid in zip(pts, g, ok, strict=True):
        one = h.project_point(*p)
        assert (one is not None) == valid
        if valid:
            assert one == pytest.approx(tuple(gp))
