"""Who may be whom: the co-occurrence and topology constraints, and the one-to-one assignment of a batch.

Why apart: these are pure functions of track times and similarity scores, the part of matching that decides
correctness; they read no store and no gallery, so they are tested on hand-made tracks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from reid.identity.records import TrackRef

if TYPE_CHECKING:
    from reid.identity.config import TopologyConfig

_BIG = 1e6  # cost of a forbidden pair in the assignment matrix


def overlaps(a: TrackRef, b: TrackRef) -> bool:
    """Visible at the same time (touching end to start does not count: a tracker hand-off)."""
    return a.start_ts < b.end_ts and b.start_ts < a.end_ts


def compatible(a: TrackRef, b: TrackRef, topology: TopologyConfig | None) -> bool:
    """Can tracks ``a`` and ``b`` belong to one person?"""
    if a.camera_id == b.camera_id:
        return a.track_id == b.track_id or not overlaps(a, b)
    return topology is None or topology.allows(a, b)


def admissible(track: TrackRef, history: Sequence[TrackRef], topology: TopologyConfig | None) -> bool:
    """Can ``track`` join an identity with this sighting history?

    Every sighting at the same time must be compatible (never two simultaneous tracks in one camera), and so must
    the sightings right before and right after it: the topology constrains each step of a walk, not every pair of
    cameras a person has ever visited.
    """
    before: TrackRef | None = None
    after: TrackRef | None = None
    for h in history:
        if h.key == track.key:
            continue
        if overlaps(h, track):
            if not compatible(h, track, topology):
                return False
        elif h.end_ts <= track.start_ts:
            if before is None or h.end_ts > before.end_ts:
                before = h
        elif after is None or h.start_ts < after.start_ts:
            after = h
    return all(h is None or compatible(h, track, topology) for h in (before, after))


def assign(scores: dict[int, dict[int, float]], threshold: float, method: str = "hungarian") -> dict[int, int]:
    """One-to-one assignment of tracks to identities from ``{track: {identity: cosine >= threshold}}``.

    Hungarian: maximise the total of ``cosine - threshold`` over the chosen pairs, each track also having the
    option of a new identity at zero gain, i.e. ``linear_sum_assignment`` on a (T, M + T) cost matrix. Greedy:
    take the most similar free pair first (what a per-track matcher does; kept for comparison).
    """
    rows = [t for t, c in scores.items() if c]
    if not rows:
        return {}
    if method == "greedy":
        pairs = sorted(((s, t, g) for t in rows for g, s in scores[t].items()), key=lambda p: (-p[0], p[1], p[2]))
        out: dict[int, int] = {}
        used: set[int] = set()
        for _, t, g in pairs:
            if t not in out and g not in used:
                out[t] = g
                used.add(g)
        return out
    if method != "hungarian":
        raise ValueError(f"unknown assignment {method!r}; valid: ['hungarian', 'greedy']")
    cols = sorted({g for t in rows for g in scores[t]})
    col = {g: j for j, g in enumerate(cols)}
    cost = np.full((len(rows), len(cols) + len(rows)), _BIG)
    for i, t in enumerate(rows):
        for g, s in scores[t].items():
            cost[i, col[g]] = threshold - s
        cost[i, len(cols) + i] = 0.0
    r, c = linear_sum_assignment(cost)
    return {rows[i]: cols[j] for i, j in zip(r, c, strict=True) if j < len(cols) and cost[i, j] < _BIG}
