"""A track that swaps people at a crossing is split there (reid.identity.swaps, IdentityTracker._split): two
calibrated views, plain data, an in-memory store.

The scene, on the ground (both homographies are exact, so each box's feet are where the person stands): A walks
right along y = 200 at 20 units/s from x = 50, B walks left along y = 260 from x = 250; they pass at 5 s, 60 apart.
In c0 the two stand one behind the other, so their boxes overlap from 4.6 to 5.4 s; c1 looks across, and its boxes
never meet. c0's tracker follows A with track 1 until the crossing and comes out of it on B (its track 2 of B is
lost at 4.8 s); it finds A again as track 3 at 6 s. c1 follows A (1) and B (2) throughout. Appearance cannot tell
(every crop looks alike): only the ground can.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.appearance import CLEAN_IOU
from detectors.types import TrackState
from pipeline.messages import EmbeddingsMsg, TrackEntry
from reid.identity.config import MatcherConfig
from reid.identity.geometry import GeometryConfig, Homography
from reid.identity.matcher import Matcher
from reid.identity.records import ENDED, SPLIT
from reid.identity.store import MemoryStore
from reid.identity.swaps import CROWDED_IOU
from reid.identity.tracker import PART_STRIDE, IdentityTracker, Outcome
from tests.scenes import unit

GEO = GeometryConfig(same_place=20, different_place=40, max_speed=100)
SWAP_AXES = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])  # c1's image is the ground with its axes swapped
STEP = 0.2


def a_at(t: float) -> tuple[float, float]:
    return 50 + 20 * t, 200.0


def b_at(t: float) -> tuple[float, float]:
    return 250 - 20 * t, 260.0


def box(cam: str, ground: tuple[float, float]) -> tuple[float, float, float, float]:
    """A 30 x 100 box whose feet (bottom centre) stand at ``ground`` in ``cam``'s image."""
    u, v = ground if cam == "c0" else (ground[1], ground[0])
    return u - 15, v - 100, u + 15, v


def frame(cam: str, ts: float, rows: list[tuple[int, TrackState, tuple[float, float], np.ndarray | None]]
          ) -> EmbeddingsMsg:
    entries, embs = [], []
    for tid, state, ground, e in rows:
        entries.append(TrackEntry(tid, state, round(ts * 25), ts, box(cam, ground), 0.9, 0.5, (),
                                  len(embs) if e is not None else -1))
        if e is not None:
            embs.append(e)
    return EmbeddingsMsg(cam, round(ts * 25), ts, tuple(entries),
                         np.stack(embs) if embs else np.zeros((0, 1024), np.float32))


def scene(c1_crossing: bool = False, c0_end: float | None = None) -> list[EmbeddingsMsg]:
    """The module's scene; ``c1_crossing``: a third person stands right behind A in c1 during the crossing, so c1's
    track of A is in a crossing too and nothing tells which view swapped. ``c0_end``: c0's tracker ends track 1
    then (an ENDED row) instead of at the end of the stream."""
    rng = np.random.default_rng(3)
    look = unit(rng.standard_normal(1024))
    alike = [unit(look + 0.05 * unit(rng.standard_normal(1024))) for _ in range(8)]
    msgs = []
    for k, t in enumerate(np.arange(0.0, 12.01, STEP)):
        t = round(float(t), 2)
        start = TrackState.STARTED if k == 0 else TrackState.ACTIVE
        c0 = [(1, start, a_at(t) if t < 5.0 else b_at(t), alike[0] if t in (0.0, 1.0) else
               alike[1] if t == 5.0 else None)]  # the detector's crop at the crossing exit
        if c0_end is not None and t >= c0_end:
            c0 = [(1, TrackState.ENDED, b_at(c0_end), None)] if t == c0_end else []
        if t < 5.0:
            c0.append((2, start, b_at(t), alike[2] if t == 0.0 else None))
        elif t == 5.0:
            c0.append((2, TrackState.ENDED, b_at(4.8), None))
        if t >= 6.0:
            c0.append((3, TrackState.STARTED if t == 6.0 else TrackState.ACTIVE, a_at(t),
                       alike[3] if t == 6.0 else None))
        c1 = [(1, start, a_at(t), alike[4] if t == 0.0 else None), (2, start, b_at(t), alike[5] if t == 0.0 else None)]
        if c1_crossing and 4.4 <= t <= 5.2:
            x, y = a_at(t)
            c1.append((3, TrackState.STARTED if t == 4.4 else TrackState.ACTIVE, (x - 8, y + 3), alike[6]
                       if t == 4.4 else None))
        if c1_crossing and t == 5.4:
            c1.append((3, TrackState.ENDED, a_at(5.2), None))
        msgs += [frame("c0", t, c0), frame("c1", t, c1)]
    return msgs


def run(msgs: list[EmbeddingsMsg]) -> tuple[list[Outcome], MemoryStore, dict[str, int]]:
    config = MatcherConfig()
    store = MemoryStore(dim=config.embedding_dim)
    tracker = IdentityTracker(config, Matcher(config, store), {"c0": Homography(np.eye(3)),
                                                                 "c1": Homography(SWAP_AXES)}, GEO)
    out = []
    for m in msgs:
        tracker.observe(m.camera_id, m.ts, m.tracks, m.embeddings)
        out += tracker.decide()
    for cam in ("c0", "c1"):
        tracker.end_camera(cam)
    out += tracker.decide()
    assert tracker.finished and not tracker.tracks and not tracker.parts
    counters = {k: v for k, v in tracker.counters.items() if not k.endswith("_ms_total")}  # decisions taken, by kind
    return out, store, counters


def placed(out: list[Outcome], cam: str, tid: int) -> int | None:
    return next(o.global_id for o in out if (o.camera_id, o.track_id) == (cam, tid) and o.kind not in (SPLIT, ENDED))


def test_a_track_that_comes_out_of_a_crossing_on_another_person_is_split_there():
    out, store, _ = run(scene())
    a, b = placed(out, "c1", 1), placed(out, "c1", 2)
    assert a != b and placed(out, "c0", 1) == a and placed(out, "c0", 2) == b
    split, = (o for o in out if o.kind == SPLIT)
    part = 1 + PART_STRIDE
    assert (split.camera_id, split.track_id, split.global_id, split.part_track_id) == ("c0", 1, a, part)
    assert split.ts == 5.0 and split.reason == "split:swap", "cut at the first clear sighting after the crossing"
    end = next(o for o in out if o.kind == ENDED and (o.camera_id, o.track_id) == ("c0", 1))
    assert end.global_id == a and end.last_seen_ts == 4.8
    assert store.get(a).tracks[[r.key for r in store.get(a).tracks].index(("c0", 1))].end_ts == 4.8
    assert placed(out, "c0", part) == b, "the part stands with c1's B"
    assert placed(out, "c0", 3) == a, "A's next c0 track is no longer kept out by the swapped track"
    assert next(o for o in out if o.kind == ENDED and o.track_id == part).global_id == b
    assert out.index(split) < out.index(end)


def test_no_split_when_both_views_were_in_a_crossing():
    out, _, _ = run(scene(c1_crossing=True))
    assert not any(o.kind == SPLIT for o in out)


def test_the_crossing_level_is_the_detectors():
    assert CROWDED_IOU == CLEAN_IOU


@pytest.mark.parametrize("c0_end", [None, 7.0, 10.0])
@pytest.mark.parametrize("ahead", ["c0", "c1"])
def test_a_split_replays_the_same_whatever_the_interleaving(ahead, c0_end):
    """One camera's messages all come first: the part then already holds every later sighting (and, with an ENDED
    row, the track's end) when it is cut. The same outcomes and the same decisions, by kind and count."""
    msgs = scene(c0_end=c0_end)
    natural = run(msgs)
    assert any(o.kind == SPLIT for o in natural[0])
    reordered = run(sorted(msgs, key=lambda m: (m.camera_id != ahead, m.ts)))
    assert natural[0] == reordered[0] and natural[2] == reordered[2]
