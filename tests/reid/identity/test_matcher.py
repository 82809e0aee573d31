"""Matching rules on hand-made embeddings whose cosines are set exactly, through a real Redis (fixture)."""

from __future__ import annotations

import numpy as np
import pytest

from reid.identity.config import MatcherConfig, RedisConfig, TopologyConfig
from reid.identity.matcher import Matcher, TrackSummary, absorb, aggregate_embeddings, new_identity
from reid.identity.rules import assign
from reid.identity.store import IdentityStore, MemoryStore
from tests.reid.identity.vectors import D, gram_vectors, track, unit


@pytest.fixture
def make_matcher(redis_url):
    stores = []

    def make(**overrides) -> Matcher:
        cfg = MatcherConfig(redis=RedisConfig(url=redis_url), **overrides)
        store = IdentityStore.from_config(cfg)
        stores.append(store)
        return Matcher(cfg, store)

    yield make
    for s in stores:
        s.close()


# -- embeddings ---------------------------------------------------------------------------------------------------


def test_aggregate_weights_best_crops_by_quality():
    a, b = unit(1), unit(2)
    embs = np.stack([2 * a, a, b])  # norms differ: each crop is normalised first
    out = aggregate_embeddings(embs, np.array([1.0, 1.0, 0.1]), top_k=2)
    assert out.dtype == np.float32 and abs(np.linalg.norm(out) - 1) < 1e-5
    assert float(out @ a) > 0.999  # the low-quality crop of another person was left out
    mixed = aggregate_embeddings(embs, np.array([1.0, 1.0, 2.0]))
    assert 0.5 < float(mixed @ a) < 0.95 and float(mixed @ b) > float(out @ b)
    with pytest.raises(ValueError, match="qualities shape"):
        aggregate_embeddings(embs, np.ones(2))
    with pytest.raises(ValueError, match=r"\(N>=1, D\)"):
        aggregate_embeddings(np.zeros((0, D)))


def test_track_summary_rejects_raw_embeddings():
    raw = np.concatenate([unit(1)[:512], unit(2)[:512]])  # HA-CNN output: norm about sqrt(2), not 1
    raw[:512] /= np.linalg.norm(raw[:512])
    raw[512:] /= np.linalg.norm(raw[512:])
    with pytest.raises(ValueError, match="unit vector.*aggregate_embeddings"):
        TrackSummary("c1", 1, 0.0, 1.0, raw.astype(np.float32))
    with pytest.raises(ValueError, match="start_ts <= end_ts"):
        TrackSummary("c1", 1, 2.0, 1.0, unit(1))
    t = TrackSummary.from_crops("c1", 7, np.array([3.0, 1.0, 2.0]), np.stack([raw, raw, raw]), np.ones(3))
    assert (t.start_ts, t.end_ts, t.num_crops) == (1.0, 3.0, 3)


# -- decision rules -----------------------------------------------------------------------------------------------


def test_threshold_and_margin_rule(make_matcher):
    # A and B are two people who look alike; each probe's cosines to them are set exactly.
    a, b, clear, close, low = gram_vectors([
        [1.00, 0.60, 0.90, 0.80, 0.50],
        [0.60, 1.00, 0.60, 0.78, 0.40],
        [0.90, 0.60, 1.00, 0.80, 0.50],
        [0.80, 0.78, 0.80, 1.00, 0.50],
        [0.50, 0.40, 0.50, 0.50, 1.00],
    ])
    m = make_matcher(threshold=0.7, margin=0.05)
    ra, rb = m.match([track("c0", 1, 0, 10, a), track("c0", 2, 0, 10, b)])  # same camera, same time
    assert ra.is_new and rb.is_new and ra.global_id != rb.global_id
    # 0.90 vs rival 0.60: joins A.
    r = m.match([track("c1", 1, 20, 30, clear)])[0]
    assert (r.global_id, r.is_new, r.reason) == (ra.global_id, False, "matched")
    assert r.similarity == pytest.approx(0.90, abs=1e-4)
    # 0.80 vs 0.78: above the threshold but ambiguous -> a new identity.
    r = m.match([track("c2", 1, 40, 50, close)])[0]
    assert r.is_new and r.reason == "new:ambiguous"
    # 0.50 best: below the threshold.
    r = m.match([track("c3", 1, 60, 70, low)])[0]
    assert r.is_new and r.reason == "new:below_threshold"


def test_hungarian_beats_greedy_on_competing_tracks(make_matcher):
    # Two people A, B; at the same moment camera c1 sees t1 (really B, but a little closer to A) and t2 (really A).
    gram = [[1.00, 0.70, 0.90, 0.88],
            [0.70, 1.00, 0.85, 0.50],
            [0.90, 0.85, 1.00, 0.75],
            [0.88, 0.50, 0.75, 1.00]]
    a, b, t1, t2 = gram_vectors(gram)
    outcomes = {}
    for method in ("greedy", "hungarian"):
        m = make_matcher(threshold=0.6, margin=0.02, assignment=method)
        m.store.client.flushall()
        m.reload()
        ra, rb = m.match([track("c0", 1, 0, 10, a), track("c0", 2, 0, 10, b)])
        r1, r2 = m.match([track("c1", 1, 100, 110, t1), track("c1", 2, 100, 110, t2)])
        outcomes[method] = (r1.global_id == rb.global_id, r2.global_id == ra.global_id, r1, r2)
    g1, g2, gr1, gr2 = outcomes["greedy"]
    h1, h2, hr1, hr2 = outcomes["hungarian"]
    assert (h1, h2) == (True, True)  # joint: t1 -> B (0.85) and t2 -> A (0.88), total 1.73
    assert (g1, g2) == (False, False)  # greedy: t1 grabs A (0.90), t2 can only found a new identity
    assert gr2.is_new and gr2.reason == "new:constraint"  # A now holds t1, seen in c1 at the same time
    assert not hr1.is_new and not hr2.is_new
    # The same decision in pure form.
    scores = {1: {"A": 0.90, "B": 0.85}, 2: {"A": 0.88}}
    assert assign(scores, 0.6, "hungarian") == {1: "B", 2: "A"}
    assert assign(scores, 0.6, "greedy") == {1: "A"}


@pytest.mark.parametrize("newcomers", [0.90, 0.65])
def test_two_views_of_a_newcomer_are_not_split_between_a_lookalike_and_a_new_identity(make_matcher, newcomers):
    """c0 and c1 see a newcomer at once (campus4's E): c1's view scores 0.74 to an earlier lookalike, c0's only
    0.60. When the two views are far more alike to each other (0.90), the identity c0's view is about to found is a
    rival of the lookalike, so both views found one identity together; when they are not (0.65), c1's view still
    joins the lookalike."""
    look, n0, n1 = gram_vectors([[1.00, 0.60, 0.74], [0.60, 1.00, newcomers], [0.74, newcomers, 1.00]])
    m = make_matcher(threshold=0.70, margin=0.03)
    lookalike = m.match([track("c2", 1, 0, 10, look)])[0].global_id
    r0, r1 = m.match([track("c0", 1, 40, 50, n0), track("c1", 1, 40, 50, n1)])
    if newcomers == 0.90:  # c1's view founds (ambiguous: the lookalike or the newcomer), c0's joins it
        assert r1.is_new and r0.global_id == r1.global_id != lookalike, (r0, r1)
    else:
        assert r0.is_new and r0.reason == "new:below_threshold", r0
        assert r1.global_id == lookalike and r1.reason == "matched", r1
    # Still running, the c1 view waits for more evidence instead, and then joins the newcomer's identity.
    m.store.client.flushall()
    m.reload()
    lookalike = m.match([track("c2", 1, 0, 10, look)])[0].global_id
    running = TrackSummary("c1", 1, 40, 45, n1, num_crops=4, quality=1.0, provisional=True)
    r0, r1 = m.match([track("c0", 1, 40, 50, n0), running])
    assert r0.is_new and r0.reason == "new:below_threshold", r0
    if newcomers == 0.90:
        assert r1.global_id is None and r1.reason == "deferred", r1
        r1 = m.match([track("c1", 1, 40, 50, n1)])[0]
        assert r1.global_id == r0.global_id, r1
    else:
        assert r1.global_id == lookalike, r1


@pytest.mark.parametrize("views", [0.80, 0.60])
def test_a_view_that_joins_shows_its_identity_to_the_other_views_of_the_batch(make_matcher, views):
    """A person returns and c1 and c2 see them at once (campus4's B): c1's view scores 0.85 to their identity, c2's
    only 0.66, under the threshold. When the two views are alike (0.80), c2's view sees the identity as it is once
    c1's view has joined, and joins too; when they are not (0.60), it founds an identity of its own, as before.
    (Two views more alike than 0.82, within the margin of c1's 0.85, would make c1's view wait as a newcomer's:
    the test above.)"""
    p, a, b = gram_vectors([[1.00, 0.85, 0.66], [0.85, 1.00, views], [0.66, views, 1.00]])
    m = make_matcher(threshold=0.70, margin=0.03)
    person = m.match([track("c0", 1, 0, 10, p)])[0].global_id
    ra, rb = m.match([track("c1", 1, 40, 50, a), track("c2", 1, 40, 50, b)])
    assert ra.global_id == person and ra.reason == "matched", ra
    if views == 0.80:
        assert rb.global_id == person and not rb.is_new and rb.reason == "matched", rb
    else:
        assert rb.is_new and rb.reason == "new:below_threshold", rb


def test_same_camera_co_occurrence_is_never_one_person(make_matcher):
    e = unit(5)
    m = make_matcher(threshold=0.7, margin=0.0)
    first = m.match([track("lobby", 1, 0, 10, e)])[0]
    # Identical appearance, same camera, overlapping in time: must be someone else.
    twin = m.match([track("lobby", 2, 5, 15, e)])[0]
    assert twin.is_new and twin.reason == "new:constraint" and twin.global_id != first.global_id
    # The same camera later (re-entry, or a tracker hand-off touching end to start): may be the same person.
    later = m.match([track("lobby", 3, 15, 20, e)])[0]
    assert later.global_id in (first.global_id, twin.global_id) and not later.is_new
    # Within one batch: two simultaneous tracks in one camera never share an identity (founding included) ...
    f = unit(6)
    r = m.match([track("hall", 1, 100, 110, f), track("hall", 2, 100, 110, f)])
    assert r[0].global_id != r[1].global_id and r[0].is_new and r[1].is_new
    # ... while simultaneous tracks in two cameras (overlapping views) do.
    g = unit(7)
    r = m.match([track("hall", 3, 200, 210, g), track("yard", 1, 200, 210, g)])
    assert r[0].global_id == r[1].global_id and sum(x.is_new for x in r) == 1


def test_topology_travel_time_window(make_matcher):
    topo = TopologyConfig.model_validate({"links": [
        {"from_camera": "c1", "to_camera": "c2", "min_travel_s": 5, "max_travel_s": 60},
        {"from_camera": "c2", "to_camera": "c3", "min_travel_s": 0, "max_travel_s": 30, "bidirectional": False},
    ]})
    e = unit(11)
    m = make_matcher(threshold=0.7, margin=0.0, topology=topo)
    gid = m.match([track("c1", 1, 0, 10, e)])[0].global_id
    too_soon = m.match([track("c2", 1, 12, 20, e)])[0]  # 2 s after leaving c1: faster than possible
    assert too_soon.is_new and too_soon.reason == "new:constraint"
    unlinked = m.match([track("c3", 1, 30, 40, e)])[0]  # c1 -> c3 is no link (c3 was reached from too_soon's c2)
    assert unlinked.global_id != gid
    m2 = make_matcher(threshold=0.7, margin=0.0, topology=topo)
    m2.store.client.flushall()
    m2.reload()
    gid = m2.match([track("c1", 1, 0, 10, e)])[0].global_id
    ok = m2.match([track("c2", 1, 30, 40, e)])[0]  # 20 s: inside [5, 60]
    assert (ok.global_id, ok.is_new) == (gid, False)
    onward = m2.match([track("c3", 1, 50, 60, e)])[0]  # c2 -> c3 within 30 s; c1 is not a neighbour any more
    assert (onward.global_id, onward.is_new) == (gid, False)
    back = m2.match([track("c2", 2, 70, 80, e)])[0]  # c3 -> c2: the link is one-way
    assert back.is_new and back.reason == "new:constraint"
    late = m2.match([track("c1", 2, 500, 510, e)])[0]  # c2 -> c1 after 420 s: beyond max_travel_s
    assert late.is_new
    assert topo.allows(track("c1", 9, 0, 10, e).ref, track("c2", 9, 70, 80, e).ref)  # 60 s: the bound counts
    assert not topo.allows(track("c1", 9, 0, 10, e).ref, track("c2", 9, 71, 80, e).ref)


def test_known_track_keeps_its_id_and_refreshes_prototypes(make_matcher):
    a, a_side = gram_vectors([[1.0, 0.75], [0.75, 1.0]])
    m = make_matcher(threshold=0.7, margin=0.0, prototype_merge_similarity=0.9)
    r = m.match([track("c1", 1, 0, 5, a, crops=3)])[0]
    again = m.match([track("c1", 1, 0, 9, a_side, crops=6)])[0]  # the same track, matured
    assert (again.global_id, again.is_new, again.reason) == (r.global_id, False, "known")
    ident = m.get(r.global_id)
    assert ident.num_tracks == 1 and ident.num_crops == 6 and ident.last_seen_ts == 9
    assert len(ident.prototypes) == 2  # a different view became a second prototype
    before = ident.rev
    m.match([track("c1", 1, 0, 9, a_side, crops=6)])  # the same update again: no new evidence
    ident2 = m.get(r.global_id)
    assert ident2.num_crops == 6 and np.array_equal(ident2.weights, ident.weights) and ident2.rev == before + 1


def test_absorb_keeps_a_few_diverse_prototypes():
    cfg = MatcherConfig(max_prototypes=3, prototype_merge_similarity=0.9)
    ident = new_identity(track("c1", 0, 0, 1, unit(0)), 1)
    for i in range(1, 6):
        ident = absorb(ident, 1, track("c1", i, i, i + 1, unit(i)), cfg)
    assert ident.prototypes.shape == (3, D) and ident.num_tracks == 6
    assert np.allclose(np.linalg.norm(ident.prototypes, axis=1), 1, atol=1e-5)
    assert ident.weights.sum() == pytest.approx(6 * 4)


def test_memory_store_gives_the_same_decisions_as_redis(make_matcher):
    rng = np.random.default_rng(3)
    people = [unit(100 + i) for i in range(6)]
    batches = []
    for cam in range(3):
        batch = []
        for p, e in enumerate(people):
            v = e + 0.6 * rng.standard_normal(D).astype(np.float32) / np.sqrt(D)
            batch.append(track(f"c{cam}", p, 100 * cam, 100 * cam + 10, (v / np.linalg.norm(v)).astype(np.float32)))
        batches.append(batch)
    cfg = dict(threshold=0.6, margin=0.02)
    redis_m = make_matcher(**cfg)
    mem_m = Matcher(MatcherConfig(**cfg), MemoryStore(D))
    for batch in batches:
        assert [r.global_id for r in redis_m.match(batch)] == [r.global_id for r in mem_m.match(batch)]
    assert redis_m.stats.new == 6 and redis_m.stats.matched == 12
