"""Track-to-track links: ground agreement between two people side by side is decided moment by moment,
continuity needs a short gap and a plausible move."""

from __future__ import annotations

import numpy as np
import pytest

from reid.identity.geometry import AGREE, CONTINUES, DISAGREE, GeometryConfig, GroundTrack
from reid.identity.links import ContinuityConfig, TrackMotion, TwoPeopleLevels, links_for

GEO = GeometryConfig(same_place=30, different_place=75, max_speed=150)
CONT = ContinuityConfig(max_gap_s=4.0, max_shift=1.0)


def moving(cam: str, tid: int, t0: float, t1: float, x0: float, y: float, box_x: float = 100) -> TrackMotion:
    g = GroundTrack()
    for ts in np.arange(t0, t1, 0.2):
        g.add(float(ts), np.array([x0 + 20 * (ts - t0), y]))
    box = np.array([box_x, 50, box_x + 40, 150], dtype=np.float64)
    return TrackMotion(cam, tid, t0, t1, box, box, g)


def path(cam: str, tid: int, t0: float, t1: float, y_of_t) -> TrackMotion:
    """A track walking along x at 20 units/s, at ``y_of_t(ts)``."""
    g = GroundTrack()
    for ts in np.arange(t0, t1, 0.2):
        g.add(float(ts), np.array([20 * ts, y_of_t(ts)]))
    box = np.array([100, 50, 140, 150], dtype=np.float64)
    return TrackMotion(cam, tid, t0, t1, box, box, g)


def test_ground_agreement_counts_only_when_unique():
    me = moving("c1", 1, 0, 4, 0, 0)
    same = moving("c0", 10, 0, 4, 5, 10)
    far = moving("c0", 11, 0, 4, 0, 200)
    assert links_for(me, [me, same, far], CONT, GEO) == {("c0", 10): AGREE, ("c0", 11): DISAGREE}
    assert links_for(me, [same, far], CONT, None) == {}  # no geometry section: no ground evidence
    assert links_for(me, [same, far], CONT, GEO, wanted={same.key}) == {("c0", 10): AGREE}


def test_two_people_side_by_side_are_told_apart_moment_by_moment():
    """Two c0 tracks seen at the same time both lie within same_place of a c1 track: the views' sightings are
    associated jointly at each moment, and the one that is the track's mutual nearest at most moments is its
    partner; when neither is, or when another c1 track stands where the nearer one does, neither is."""
    me = path("c1", 1, 0, 4, lambda t: 0.0)
    near = path("c0", 10, 0, 4, lambda t: 10.0)
    beside = path("c0", 12, 0, 4, lambda t: -15.0)  # also within same_place, but never the nearer
    far = path("c0", 11, 0, 4, lambda t: 200.0)
    assert links_for(me, [near, far, beside], CONT, GEO) == {("c0", 10): AGREE, ("c0", 11): DISAGREE}
    # An unwanted track is still a rival, resolved the same way.
    assert links_for(me, [near, far, beside], CONT, GEO, wanted={near.key, far.key}) == {
        ("c0", 10): AGREE, ("c0", 11): DISAGREE}
    # Exactly as near, at every moment: a tie is nobody's, whichever order the tracks come in.
    above, below = path("c0", 14, 0, 4, lambda t: 10.0), path("c0", 15, 0, 4, lambda t: -10.0)
    assert links_for(me, [above, below], CONT, GEO) == links_for(me, [below, above], CONT, GEO) == {}
    # Nearer by turns, half the time each: no majority, no evidence for either.
    swapping = path("c0", 13, 0, 4, lambda t: -15.0 if t < 2 else -5.0)
    assert links_for(me, [near, swapping], CONT, GEO) == {}
    # The nearer one stands where another c1 track is: it is that track's partner, and beside is never the nearer.
    twin = path("c1", 2, 0, 4, lambda t: 9.0)
    assert links_for(me, [near, beside, twin], CONT, GEO) == {}
    assert links_for(twin, [near, beside, me], CONT, GEO) == {("c0", 10): AGREE}


def test_continuity_in_one_camera():
    lost = TrackMotion("c0", 1, 0.0, 5.0, np.array([100, 50, 140, 150.0]), np.array([100, 50, 140, 150.0]))
    found = TrackMotion("c0", 2, 6.0, 9.0, np.array([150, 55, 190, 155.0]), np.array([300, 55, 340, 155.0]))
    assert links_for(found, [lost], CONT, None) == {("c0", 1): CONTINUES}
    too_late = TrackMotion("c0", 3, 10.0, 12.0, found.first_box, found.first_box)
    assert links_for(too_late, [lost], CONT, None) == {}
    too_far = TrackMotion("c0", 4, 6.0, 9.0, np.array([600, 50, 640, 150.0]), np.array([600, 50, 640, 150.0]))
    assert links_for(too_far, [lost], CONT, None) == {}
    other_lost = TrackMotion("c0", 5, 0.0, 5.5, np.array([160, 50, 200, 150.0]), np.array([160, 50, 200, 150.0]))
    assert links_for(found, [lost, other_lost], CONT, None) == {}  # two candidates: no evidence
    assert links_for(found, [lost], ContinuityConfig(max_gap_s=0), None) == {}


def test_continuity_on_the_ground_uses_walking_speed():
    lost = moving("c0", 1, 0, 5, 0, 0)
    near = moving("c0", 2, 6, 8, lost.ground.xy[-1][0] + 100, 0, box_x=600)  # 100 units in 1 s: plausible
    far = moving("c0", 3, 6, 8, lost.ground.xy[-1][0] + 400, 0, box_x=100)  # 400 units in 1 s: not
    assert links_for(near, [lost], CONT, GEO) == {("c0", 1): CONTINUES}
    assert links_for(far, [lost], CONT, GEO) == {}


def test_successive_fragments_of_one_person_both_agree():
    """The tracker split one person in c0 (tracks 10 then 11): a c1 track beside both agrees with both."""
    me = moving("c1", 1, 0, 8, 0, 0)
    first, second = moving("c0", 10, 0, 3.9, 5, 10), moving("c0", 11, 4.1, 8, 5 + 20 * 4.1, 10)
    assert links_for(me, [first, second], CONT, GEO) == {("c0", 10): AGREE, ("c0", 11): AGREE}


def test_the_two_people_level_pools_the_cameras_is_bounded_and_waits_for_enough_pairs():
    levels = TwoPeopleLevels(quantile=0.9, min_pairs=5, max_samples=20)
    for v in np.linspace(0.0, 1.0, 3):
        levels.add("c0", v)
    levels.add("c1", 0.5)
    assert levels.level() is None  # 4 pairs over both cameras, 5 needed
    levels.add("c1", 0.25)
    assert levels.level() == pytest.approx(0.8)  # 0, 0.25, 0.5, 0.5, 1: both cameras' pairs count
    for v in np.linspace(0.0, 1.0, 101):  # the latest 20 (0.80 to 1.00) are kept
        levels.add("c0", v)
    assert levels.counts() == {"c0": 104, "c1": 2}
    assert levels.level() == pytest.approx(0.981, abs=1e-3)
