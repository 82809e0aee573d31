"""The link scores on hand-made outcomes: IDF1's one-to-one mapping and each later track's classification."""

from __future__ import annotations

import pytest

from reid.identity.link_metrics import LinkTrack, idf1, link_scores
from reid.identity.matcher import MatchResult, TrackSummary
from tests.reid.identity.vectors import unit


def test_idf1_maps_identities_to_people_one_to_one():
    assert idf1([1, 1, 2, 2], [7, 7, 8, 8]) == 1.0
    assert idf1([1, 1, 2, 2], [7, 7, 7, 7]) == 0.5  # everyone merged: one person's tracks count
    assert idf1([1, 1, 2, 2], [5, 6, 7, 8]) == 0.5  # nobody linked
    assert idf1([1, 1, 1, 2], [5, 5, 6, 6]) == pytest.approx(0.75)


def test_link_scores_classify_each_later_track():
    def lt(cam: int, pid: int) -> LinkTrack:
        return LinkTrack(TrackSummary(f"c{cam}", pid, 0, 1, unit(pid)), pid)

    def res(t: LinkTrack, gid: int, new: bool) -> MatchResult:
        return MatchResult(gid, 0.9, new, t.summary.camera_id, t.summary.track_id)

    cam1 = [lt(1, p) for p in (1, 2, 3)]
    cam2 = [lt(2, p) for p in (1, 2, 3, 4)]
    r1 = [res(t, 10 + i, True) for i, t in enumerate(cam1)]
    r2 = [res(cam2[0], 10, False),  # right identity
          res(cam2[1], 10, False),  # merged into person 1
          res(cam2[2], 13, True),  # person 3 already had identity 12
          res(cam2[3], 14, True)]  # person 4 is new: a new identity is right
    s = link_scores([cam1, cam2], [r1, r2])
    assert (s["correct_link"], s["false_merge"], s["false_new"]) == (0.5, 0.25, 0.25)
    assert s["num_tracks"] == 7 and s["num_linking_tracks"] == 4
    assert s["idf1"] == pytest.approx(idf1([1, 2, 3, 1, 2, 3, 4], [10, 11, 12, 10, 10, 13, 14]))
