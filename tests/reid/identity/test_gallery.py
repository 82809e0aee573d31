"""The gallery's search against brute force: numpy through updates and compaction, and the faiss IVF index."""

from __future__ import annotations

import numpy as np
import pytest

from reid.identity.config import MatcherConfig
from reid.identity.gallery import Gallery
from reid.identity.matcher import absorb, new_identity
from tests.reid.identity.vectors import D, track, unit


def test_gallery_matches_brute_force_through_updates_and_compaction():
    rng = np.random.default_rng(0)
    cfg = MatcherConfig(max_prototypes=3)
    gallery, truth = Gallery(D, index="numpy"), {}
    for step in range(3000):
        gid = int(rng.integers(1, 400))
        if gid in truth and rng.random() < 0.1:
            gallery.remove(gid)
            del truth[gid]
            continue
        t = track("c", step, step, step + 1, unit(10_000 + step))
        ident = absorb(truth.get(gid), gid, t, cfg) if gid in truth else new_identity(t, gid)
        gallery.upsert(ident)
        truth[gid] = ident
    probes = np.stack([unit(i) for i in range(5)])
    gids, sims = gallery.scores(probes)
    assert sorted(gids.tolist()) == sorted(truth)
    for j, g in enumerate(gids):
        assert np.allclose(sims[:, j], (probes @ truth[int(g)].prototypes.T).max(1), atol=1e-5)
    cands, best = gallery.candidates(probes, 0.05)
    assert all(all(s >= 0.05 for s in c.values()) for c in cands)
    assert best[0] == pytest.approx(sims[0].max())
    # A subset's identities close to the probes: the same as the full search says, absent ids skipped.
    subset = set(list(truth)[:50]) | {10_000}
    expected = {g for g in subset if g in truth and (probes @ truth[g].prototypes.T).max() >= 0.05}
    assert gallery.within(subset, probes, 0.05) == expected


def test_faiss_index_finds_what_brute_force_finds():
    pytest.importorskip("faiss")
    cfg = MatcherConfig(max_prototypes=3)
    brute, index, truth = Gallery(D, index="numpy"), Gallery(D, index="faiss", faiss_nprobe=64), {}
    rng = np.random.default_rng(1)
    centers = np.stack([unit(30_000 + c) for c in range(40)])  # people come in look-alike groups, as real ones do

    def person(seed: int) -> np.ndarray:
        v = centers[seed % 40] + 0.8 * unit(seed)
        return (v / np.linalg.norm(v)).astype(np.float32)

    for step in range(4000):
        gid = int(rng.integers(1, 2000))
        if gid in truth and rng.random() < 0.1:
            brute.remove(gid)
            index.remove(gid)
            del truth[gid]
            continue
        t = track("c", step, step, step + 1, person(gid))
        ident = absorb(truth[gid], gid, t, cfg) if gid in truth else new_identity(t, gid)
        brute.upsert(ident)
        index.upsert(ident)
        truth[gid] = ident
        if step == 1500:
            index.candidates(unit(0)[None], 0.0)  # build the index midway: later updates go to it row by row
    gids = sorted(truth)[:40]
    probes = np.stack([person(g) + 0.2 * unit(50_000 + g) for g in gids])
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    (cb, bb), (cf, bf) = brute.candidates(probes, 0.6), index.candidates(probes, 0.6)
    assert np.allclose(bb, bf, atol=1e-4)  # the best identity is found (the index is approximate in general)
    for a, b in zip(cb, cf, strict=True):
        assert max(a, key=a.get) == max(b, key=b.get)
        assert all(abs(a[g] - b[g]) < 1e-4 for g in b)
