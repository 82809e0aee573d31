"""The identity tracker alone: plain data in, outcomes out, an in-memory store, no sockets (ordering, maturity,
deferral, links, outcomes, bounds on a live stream, and no record rewritten at every decision)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detectors.types import TrackState
from pipeline.messages import EmbeddingsMsg
from reid.identity.config import MatcherConfig
from reid.identity.geometry import GeometryConfig, Homography
from reid.identity.matcher import Matcher
from reid.identity.records import CORRECTED, ENDED, MOVED, NEW, SEEN
from reid.identity.store import MemoryStore
from reid.identity.tracker import IdentityTracker, Outcome
from tests.scenes import frame, scene, unit

CAMS = ("c0", "c1", "c2")
GEO = GeometryConfig(same_place=20, different_place=40, max_speed=100)


def make(calibrated: bool = False, clock=None, **overrides) -> tuple[IdentityTracker, MemoryStore]:
    config = MatcherConfig(**overrides)
    store = MemoryStore(dim=config.embedding_dim)
    h = Homography(np.eye(3)) if calibrated else None
    kw = {"clock": clock} if clock else {}
    tracker = IdentityTracker(config, Matcher(config, store), {c: h for c in CAMS}, GEO if calibrated else None,
                              **kw)
    return tracker, store


def feed(tracker: IdentityTracker, msgs: list[EmbeddingsMsg], end: bool = True) -> list[Outcome]:
    out = []
    for m in msgs:
        tracker.observe(m.camera_id, m.ts, m.tracks, m.embeddings, live=m.live)
        out += tracker.decide()
    if end:
        for cam in CAMS:
            tracker.end_camera(cam)
        out += tracker.decide()
    return out


def first(outcomes: list[Outcome], cam: str, tid: int) -> Outcome:
    return next(o for o in outcomes if (o.camera_id, o.track_id) == (cam, tid))


@pytest.mark.parametrize("wait_s", [10.0, 0.0])
def test_an_ambiguous_track_waits_for_evidence_then_joins(wait_s):
    msgs, _ = scene()
    tracker, _ = make(ambiguous_wait_s=wait_s)
    out = feed(tracker, msgs)
    x, y = first(out, "c1", 1), first(out, "c1", 2)
    a, b = first(out, "c0", 1), first(out, "c0", 2)
    assert x.kind == NEW and y.kind == NEW and x.global_id != y.global_id
    assert b.kind == MOVED and b.global_id == y.global_id and b.from_camera == "c1"
    if wait_s:
        assert tracker.counters["deferred_tracks"] == 1 and tracker.counters["deferred_retries"] >= 1
        assert a.kind == MOVED and a.global_id == x.global_id and a.ts >= 9.5, "A waited for B to take Y"
    else:
        assert a.kind == NEW and a.reason == "new:ambiguous" and a.ts == 7.0
    assert sorted((o.camera_id, o.track_id) for o in out if o.kind == ENDED) == [("c0", 1), ("c0", 2), ("c1", 1),
                                                                                  ("c1", 2)]
    assert tracker.finished and not tracker.tracks


def test_outcomes_do_not_depend_on_the_interleaving_of_the_cameras():
    msgs, _ = scene()
    by_time = feed(make()[0], sorted(msgs, key=lambda m: (m.ts, m.camera_id)))
    c0_first = feed(make()[0], sorted(msgs, key=lambda m: (m.camera_id != "c0", m.ts)))
    c1_first = feed(make()[0], sorted(msgs, key=lambda m: (m.camera_id != "c1", m.ts)))
    assert by_time == c0_first == c1_first
    assert [o.ts for o in by_time if o.kind != ENDED] == sorted(o.ts for o in by_time if o.kind != ENDED)


def test_a_track_is_decided_at_min_age_and_a_fragment_gets_nothing():
    rng = np.random.default_rng(1)
    e = unit(rng.standard_normal(1024))
    msgs = [frame("c0", t, [(1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
            for t in np.arange(0.0, 3.01, 0.5)]
    msgs += [frame("c1", t, [(7, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
             for t in (0.0, 0.5, 1.0)] + [frame("c1", 1.5, [(7, TrackState.ENDED, None)])]
    tracker, store = make(min_age_s=2.0)
    out = feed(tracker, msgs)
    assert [(o.kind, o.camera_id, o.track_id, o.ts) for o in out] == [(NEW, "c0", 1, 2.0), (ENDED, "c0", 1, 3.0)]
    assert tracker.counters["short_tracks"] == 1 and store.lookup_tracks([("c1", 7)]) == [None]


def test_people_at_the_same_ground_place_are_linked_across_cameras():
    rng = np.random.default_rng(2)
    p = unit(rng.standard_normal(1024))
    q = unit(0.5 * p + np.sqrt(0.75) * unit(rng.standard_normal(1024)))  # cosine ~0.5: below the threshold
    msgs = []
    for t in np.arange(0.0, 4.01, 0.5):
        state = TrackState.STARTED if t == 0 else TrackState.ACTIVE
        msgs.append(frame("c0", t, [(1, state, p if t == 0 else None)]))
        if t >= 1.0:  # c1 sees the same person (same box: the same ground place with identity homographies)
            msgs.append(frame("c1", t, [(1, TrackState.STARTED if t == 1.0 else TrackState.ACTIVE,
                                         q if t == 1.0 else None)]))
    linked = feed(make(calibrated=True)[0], msgs)
    c1 = first(linked, "c1", 1)
    assert c1.kind == MOVED and c1.reason == "linked" and c1.global_id == first(linked, "c0", 1).global_id
    assert c1.ground_xy == (75.0, 120.0)
    alone = feed(make(calibrated=False)[0], msgs)
    assert first(alone, "c1", 1).kind == NEW, "without calibration, appearance alone keeps them apart"


def test_running_tracks_are_not_rewritten_at_every_decision():
    """A placed track keeps running while another is decided again and again: its identity record is written when
    it is placed, then only every refresh_every_s and at its end, never at each decision."""
    rng = np.random.default_rng(3)
    p, r = (unit(rng.standard_normal(1024)) for _ in range(2))
    msgs = []
    for t in np.arange(0.0, 70.01, 0.5):
        state = TrackState.STARTED if t == 0 else TrackState.ACTIVE
        rows = [(1, state, p if t == 0 else None)]
        if 1.0 <= t < 3.0 or 10.0 <= t < 12.0:  # short-lived other people: decisions while track 1 runs
            rows.append((int(t // 10) + 2, TrackState.STARTED if t in (1.0, 10.0) else TrackState.ACTIVE,
                         r if t in (1.0, 10.0) else None))
        msgs.append(frame("c0", t, rows))
    tracker, store = make(refresh_every_s=30.0)
    tracker.end_camera("c1")
    tracker.end_camera("c2")
    feed(tracker, msgs, end=False)
    writes_of_1 = [rev for gid, rev in store.log if gid == store.lookup_tracks([("c0", 1)])[0]]
    assert writes_of_1 == [1, 2, 3], "placed at 2 s, refreshed at 32 s and 62 s, nothing else"
    assert tracker.counters["decisions"] > 3 and tracker.counters["refreshed_tracks"] == 2


def test_lost_ends_and_a_restarted_detector_end_old_tracks():
    rng = np.random.default_rng(4)
    e = unit(rng.standard_normal(1024))
    msgs = [frame("c0", t, [(5, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
            for t in np.arange(0.0, 3.01, 0.5)]  # track 5's end never comes (lost with a dead stage)
    msgs += [frame("c0", t, []) for t in np.arange(3.5, 10.01, 0.5)]
    msgs += [frame("c1", t, [(1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
             for t in np.arange(0.0, 5.01, 0.5)]
    msgs += [frame("c1", 5.5, [(1_000_001, TrackState.STARTED, None)])]  # the detector restarted: a new id range
    msgs += [frame("c1", t, [(1_000_001, TrackState.ACTIVE, None)]) for t in np.arange(6.0, 10.01, 0.5)]
    msgs = sorted(msgs, key=lambda m: m.ts)
    tracker, _ = make()
    tracker.end_camera("c2")
    out = feed(tracker, msgs, end=False)
    ended = {(o.camera_id, o.track_id): o for o in out if o.kind == ENDED}
    assert ended[("c0", 5)].ts == 3.0 and ended[("c1", 1)].ts == 5.0
    assert tracker.counters["stale_tracks_ended"] >= 1 and tracker.counters["tracks_ended_by_restart"] == 1
    assert set(tracker.tracks) == {("c1", 1_000_001)}


def test_a_silent_live_camera_stops_holding_back_decisions():
    now = [0.0]
    msgs, _ = scene()
    live = [EmbeddingsMsg(m.camera_id, m.frame_index, m.ts, m.tracks, m.embeddings, live=True)
            for m in msgs if m.camera_id == "c1"]
    tracker, _ = make(clock=lambda: now[0], max_lateness_s=2.0)
    assert not feed(tracker, live, end=False), "c0 and c2 were never heard from, but only just now"
    now[0] = 2.5
    out = tracker.decide()
    assert [o.kind for o in out if o.kind != ENDED] == [NEW, NEW]


def test_seen_again_in_the_same_camera_is_seen():
    rng = np.random.default_rng(5)
    e = unit(rng.standard_normal(1024))
    msgs = [frame("c0", t, [(1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
            for t in np.arange(0.0, 3.01, 0.5)] + [frame("c0", 3.5, [(1, TrackState.ENDED, None)])]
    msgs += [frame("c0", t, [(2, TrackState.STARTED if t == 20 else TrackState.ACTIVE, e if t == 20 else None)])
             for t in np.arange(20.0, 23.01, 0.5)]
    out = feed(make()[0], msgs)
    assert first(out, "c0", 2).kind == SEEN and first(out, "c0", 2).global_id == first(out, "c0", 1).global_id


def test_a_lost_track_ends_when_last_seen_so_its_successor_keeps_the_identity():
    """Track 1 is lost after 3.0 s; the detector gives it up at 4.5 s, sending its best unsent crop (taken at 2.0 s)
    with the end. Track 2 starts meanwhile (3.5 s), the same person: it continues the identity."""
    rng = np.random.default_rng(8)
    e = unit(rng.standard_normal(1024))
    msgs = [frame("c0", t, [(1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
            for t in np.arange(0.0, 3.01, 0.5)]
    msgs += [frame("c0", t, [(1, TrackState.LOST, None), (2, TrackState.STARTED if t == 3.5 else TrackState.ACTIVE,
                                                          e if t == 3.5 else None)]) for t in (3.5, 4.0)]
    end = frame("c0", 4.5, [(1, TrackState.ACTIVE, e), (1, TrackState.ENDED, None), (2, TrackState.ACTIVE, None)])
    late_crop = replace(end.tracks[0], ts=2.0, frame_index=50)
    msgs.append(replace(end, tracks=(late_crop, *end.tracks[1:])))
    msgs += [frame("c0", t, [(2, TrackState.ACTIVE, None)]) for t in np.arange(5.0, 7.01, 0.5)]
    out = feed(make()[0], msgs)
    ended = next(o for o in out if o.kind == ENDED and o.track_id == 1)
    assert ended.last_seen_ts == 3.0
    assert first(out, "c0", 2).kind == SEEN and first(out, "c0", 2).global_id == first(out, "c0", 1).global_id


def unlike_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A person's embedding and a first crop of the same person that looks unlike it (cosine 0.3, below
    link_min_similarity)."""
    rng = np.random.default_rng(seed)
    q = unit(rng.standard_normal(1024))
    return q, unit(0.3 * q + np.sqrt(1 - 0.09) * unit(rng.standard_normal(1024)))


def standing_together(cams: tuple[str, str], track: int, start: float, end: float, q: np.ndarray, w: np.ndarray,
                      alike_at: tuple[float, ...]) -> list:
    """Track ``track`` of both cameras at one place every 0.5 s from ``start`` to ``end``: the first camera's first
    crop is ``q``, the second's is ``w`` (unlike ``q``), then looks like ``q`` at the times ``alike_at``."""
    msgs = []
    for t in np.arange(start, end + 0.01, 0.5):
        state = TrackState.STARTED if t == start else TrackState.ACTIVE
        msgs.append(frame(cams[0], t, [(track, state, q if t == start else None)]))
        msgs.append(frame(cams[1], t, [(track, state, w if t == start else q if t in alike_at else None)]))
    return msgs


def test_a_track_placed_apart_joins_the_identity_it_stands_with():
    """c0/1 and c1/1 stand at one place from the start, but c0/1's first crop looks unlike c1/1 (cosine 0.3, below
    link_min_similarity): it founds an identity of its own. Its next crops look like c1/1; the ground check then
    moves it to c1/1's identity, and its own identity, left empty, is deleted."""
    q, w = unlike_pair(9)
    msgs = standing_together(("c1", "c0"), 1, 0.0, 6.0, q, w, (2.5, 3.0, 3.5))
    tracker, store = make(calibrated=True)
    out = feed(tracker, msgs)
    a, b = first(out, "c1", 1), first(out, "c0", 1)
    assert a.kind == NEW and b.kind == NEW and a.global_id != b.global_id
    fix = next(o for o in out if o.kind == CORRECTED)
    assert (fix.camera_id, fix.track_id, fix.global_id, fix.from_global_id) == ("c0", 1, a.global_id, b.global_id)
    assert fix.reason == "corrected:same_place" and fix.ts == 4.0
    assert store.lookup_tracks([("c0", 1)]) == [a.global_id] and store.get(b.global_id) is None
    assert first([o for o in out if o.kind == ENDED], "c0", 1).global_id == a.global_id
    assert sum(o.kind == CORRECTED for o in out) == 1


def test_one_identity_at_two_places_at_once_loses_the_later_track():
    """c0/1 is placed first (lost from 1 s); c1/2, the same look, 60 away, is placed while c0/1 is out of sight, so
    nothing forbids it. From 4 s both are seen at once, 60 apart (different_place 40): c1/2, placed later, leaves
    for a new identity at its next ground check."""
    rng = np.random.default_rng(10)
    p = unit(rng.standard_normal(1024))
    msgs = []
    for t in np.arange(0.0, 8.01, 0.5):
        rows = []
        if t < 1.0 or t >= 4.0:
            rows.append((1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, p if t == 0 else None))
        else:
            rows.append((1, TrackState.LOST, None))
        msgs.append(frame("c0", t, rows))
        if t >= 1.0:
            msgs.append(frame("c1", t, [(2, TrackState.STARTED if t == 1.0 else TrackState.ACTIVE,
                                         p if t == 1.0 else None)]))
    tracker, store = make(calibrated=True)
    out = feed(tracker, msgs)
    a, b = first(out, "c0", 1), first(out, "c1", 2)
    assert a.kind == NEW and b.kind == MOVED and b.global_id == a.global_id
    fix = next(o for o in out if o.kind == CORRECTED)
    assert (fix.camera_id, fix.track_id, fix.from_global_id, fix.reason) == ("c1", 2, a.global_id, "corrected:apart")
    assert fix.ts == 5.0
    assert fix.global_id not in (a.global_id, None)
    assert store.lookup_tracks([("c0", 1), ("c1", 2)]) == [a.global_id, fix.global_id]
    assert sum(o.kind == CORRECTED for o in out) == 1


def test_of_two_tracks_at_one_place_the_one_of_the_smaller_identity_moves():
    """c0/2 continues identity 1 (two tracks by then); c1/2 stands at its place from the start but its first crop looks
    unlike (cosine 0.3), so it founds identity 2 (one track). When its crops come to look like c0/2's, the check of
    c0/2 moves c1/2 - the track of the smaller identity - into identity 1, not c0/2 into identity 2."""
    q, w = unlike_pair(11)
    msgs = [frame("c0", t, [(1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, q if t == 0 else None)])
            for t in np.arange(0.0, 3.01, 0.5)] + [frame("c0", 3.5, [(1, TrackState.ENDED, None)])]
    msgs += standing_together(("c0", "c1"), 2, 4.0, 10.0, q, w, (6.5, 7.0, 7.5))
    tracker, store = make(calibrated=True)
    out = feed(tracker, msgs)
    # Corrections read everything as of their time: one camera running far ahead changes nothing.
    assert out == feed(make(calibrated=True)[0], sorted(msgs, key=lambda m: (m.camera_id != "c1", m.ts)))
    assert out == feed(make(calibrated=True)[0], sorted(msgs, key=lambda m: (m.camera_id != "c0", m.ts)))
    assert first(out, "c0", 2).kind == SEEN and first(out, "c1", 2).kind == NEW
    one, two = first(out, "c0", 1).global_id, first(out, "c1", 2).global_id
    fixes = [o for o in out if o.kind == CORRECTED]
    assert [(o.camera_id, o.track_id, o.from_global_id, o.global_id) for o in fixes] == [("c1", 2, two, one)]
    assert store.lookup_tracks([("c0", 2), ("c1", 2)]) == [one, one] and store.get(two) is None


def with_cosines(gram: np.ndarray, seed: int) -> list[np.ndarray]:
    """Unit embeddings whose pairwise cosines are ``gram`` (positive definite, ones on the diagonal)."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((1024, len(gram))))
    return [unit(v) for v in np.linalg.cholesky(gram) @ basis.T]


def lost_and_someone_else(two_people: float, in_c1: float | None = None) -> list:
    """c0: three people (tracks 1, 3, 8; pairwise cosine ``two_people``) seen together 0-3 s, all lost; at 3.5 s
    track 4 starts where track 3 was (a continuity link to it) on a person whose cosine to track 3 is 0.6: below
    the matcher's threshold (0.70), above ``link_min_similarity`` (0.45). With ``in_c1``, c1 shows three other
    people together at the same time (pairwise cosine ``in_c1``, unlike c0's people)."""
    a, b = two_people, 0.3
    gram = np.full((7, 7), b)
    gram[:4, :4] = [[1, a, a, b], [a, 1, a, 0.6], [a, a, 1, b], [b, 0.6, b, 1]]
    gram[4:, 4:] = in_c1 if in_c1 is not None else b
    np.fill_diagonal(gram, 1.0)
    p, q, r, s, *others = with_cosines(gram, seed=21)
    msgs = [frame("c0", t, [(tid, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)
                            for tid, e in ((1, p), (3, q), (8, r))]) for t in np.arange(0.0, 3.01, 0.5)]
    if in_c1 is not None:
        msgs += [frame("c1", t, [(tid, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)
                                 for tid, e in zip((1, 2, 3), others, strict=True)]) for t in np.arange(0.0, 3.01, 0.5)]
        msgs.append(frame("c1", 3.5, [(tid, TrackState.ENDED, None) for tid in (1, 2, 3)]))
    msgs.append(frame("c0", 3.5, [(1, TrackState.ENDED, None), (3, TrackState.ENDED, None), (8, TrackState.ENDED, None),
                                  (4, TrackState.STARTED, s)]))
    msgs += [frame("c0", t, [(4, TrackState.ACTIVE, None)]) for t in np.arange(4.0, 6.01, 0.5)]
    return sorted(msgs, key=lambda m: m.ts)


@pytest.mark.parametrize(("two_people", "in_c1", "quantile", "min_pairs", "joins"), [
    (0.45, None, 0.95, 3, True),  # two people of this site score 0.45: 0.6 backs the link
    (0.65, None, 0.95, 3, False),  # they score 0.65: 0.6 is what two people look like, the link counts for nothing
    (0.65, None, None, 3, True),  # the rule off: link_min_similarity (0.45) alone
    (0.45, None, 0.95, 10, False),  # three pairs seen, ten needed: until then a continuity link needs the threshold
    # c0's own three pairs score 0.45, c1's 0.65: the level is the site's, over both cameras' six pairs
    (0.45, 0.65, 0.95, 6, False),
])
def test_a_continuity_link_needs_more_likeness_than_two_people_of_the_site_show(two_people, in_c1, quantile,
                                                                                 min_pairs, joins):
    tracker, _ = make(continuity={"appearance_quantile": quantile, "min_pairs": min_pairs})
    out = feed(tracker, lost_and_someone_else(two_people, in_c1))
    q, successor = first(out, "c0", 3), first(out, "c0", 4)
    assert q.kind == NEW and tracker.counters["links_continue"] >= 1
    if joins:
        assert (successor.kind, successor.global_id, successor.reason) == (SEEN, q.global_id, "linked")
    else:
        assert successor.kind == NEW and successor.reason == "new:below_threshold"
    stats = tracker.stats()
    pairs = 3 + (3 if in_c1 is not None else 0)
    expected = max(two_people, in_c1 or -1.0) if quantile and min_pairs <= pairs else None
    assert stats["two_people_level"] == (pytest.approx(expected, abs=2e-3) if expected is not None else None)
    assert stats["two_people_pairs"] == ({} if quantile is None else {"c0": 3, **({"c1": 3} if in_c1 else {})})


def one_person_per_camera(seed: int) -> tuple[list, list[np.ndarray]]:
    """c0 and c1, 0-3 s: track 1 of each camera, two unlike people."""
    people = [unit(v) for v in np.random.default_rng(seed).standard_normal((2, 1024))]
    msgs = [frame(cam, t, [(1, TrackState.STARTED if t == 0 else TrackState.ACTIVE, e if t == 0 else None)])
            for t in np.arange(0.0, 3.01, 0.5) for cam, e in zip(("c0", "c1"), people, strict=True)]
    return msgs, people


def test_a_new_run_on_the_same_store_never_takes_an_earlier_runs_track_for_its_own():
    """Every run's detector numbers its tracks from 1: run 1's c0/1 is someone else than run 0's c0/1, and must be
    matched on its appearance, not found as a known track; outcomes keep the detector's ids."""
    config = MatcherConfig()
    store = MemoryStore(dim=config.embedding_dim)

    def run(msgs: list) -> list[Outcome]:
        number = store.begin_run(fresh=True)
        return feed(IdentityTracker(config, Matcher(config, store), {c: None for c in CAMS}, run=number), msgs)

    first_run, _ = one_person_per_camera(seed=31)
    before = run(first_run)
    swapped, people = one_person_per_camera(seed=31)  # the same two people, each now in the other camera
    for m in swapped:
        m.embeddings[:] = people[1] if m.camera_id == "c0" else people[0]
    after = run(swapped)
    assert store.runs == 2
    a0, a1 = first(before, "c0", 1), first(before, "c1", 1)
    b0, b1 = first(after, "c0", 1), first(after, "c1", 1)
    assert (a0.kind, a1.kind) == (NEW, NEW)
    assert (b0.global_id, b1.global_id) == (a1.global_id, a0.global_id), "matched on appearance, across runs"
    assert b0.reason == b1.reason == "matched" and b0.kind == b1.kind == MOVED
    assert {o.track_id for o in after} == {1}, "outcomes carry the detector's ids"
