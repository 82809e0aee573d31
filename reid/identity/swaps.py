"""A track that swapped people at a crossing, found from the other calibrated view.

A per-camera tracker that follows two people through a crossing, or loses one behind another, sometimes comes out
on the other person. Nothing in one camera tells which: to today's embedding the wrong person's boxes look about as
much like the track as its own person's (docs/crowds.md). A second calibrated view often does. Before the crossing
the track stood on the ground with a track of its own identity in the other view: one person seen twice. After it,
it stands far from that track, which goes on being seen, and with another track of that view instead. Which of the
two changed person? The one in a crossing when they parted: a tracker swaps where boxes overlap in its image. The
other view's track, seen on each of its frames and clear of every other box while they parted, kept its person.

:func:`find_swap` applies that, for a track S placed in identity I and a track P of I in another calibrated view:

1. **They were one person.** The per-moment ground distance was within ``same_place`` for at least
   ``min_common`` moments. It is the median of three consecutive common moments, so one bad foot point does not
   count. The last such moment is when they were last together.
2. **They parted.** The first later moment beyond ``same_place`` is when they parted.
3. **Then they were two people.** At a later moment, the distance is beyond ``different_place``.
4. **S was in a crossing when they parted, and P was not.**
   - S has a sighting whose box overlaps another track's box above :data:`CROWDED_IOU`, from the moment before
     they were last together until they parted.
   - P was seen on each of its camera's frames and clear of every box, from the start of S's crossing until they
     parted.
5. **S now stands with another track.** From S's first clear sighting after that crossing (the cut) until now, S
   stands with exactly one track W of P's camera within ``same_place`` (``min_common`` moments), and W is not P.

Then S's sightings from the cut on are another person's, and the identity tracker splits S there
(:mod:`reid.identity.tracker`). The thresholds are the calibration's own (``geometry``); nothing here is tuned to a
clip. The rule is symmetric in the two views: each track is checked against the other view's, and only the one that
was in the crossing can satisfy it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from reid.identity.geometry import GeometryConfig, GroundTrack, co_visible_distance, co_visible_pairs

# A box overlapping another above this IoU is in a crossing: the level at which the detector's appearance tracker
# stops learning from a detection (detectors.appearance.CLEAN_IOU; a test keeps the two equal).
CROWDED_IOU = 0.1

TrackKey = tuple[str, int]


@dataclass(frozen=True)
class SwapView:
    """One track as of a decision: its ground positions, and each sighting's time and whether its box overlapped
    another track's (:data:`CROWDED_IOU`)."""

    key: TrackKey
    ground: GroundTrack
    ts: np.ndarray  # (N,) sighting times, ascending
    crowded: np.ndarray  # (N,) bool


@dataclass(frozen=True)
class Swap:
    """S's sightings from ``cut_ts`` on are another person's: it left ``partner`` (a track of its identity in the
    other view) for ``joined``."""

    cut_ts: float
    partner: TrackKey
    joined: TrackKey
    together_until: float
    parted_at: float


def _smoothed(d: np.ndarray) -> np.ndarray:
    """Median of each moment with its two neighbours (the ends repeat): one bad foot point does not count."""
    padded = np.concatenate([d[:1], d, d[-1:]])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 3), axis=1)


def _seen_clear(p: SwapView, start: float, end: float) -> bool:
    """Was ``p`` seen on each of its frames from ``start`` to ``end``, clear of every other box?"""
    if len(p.ts) < 2:
        return False
    step = float(np.median(np.diff(p.ts)))
    i, j = int(np.searchsorted(p.ts, start - step)), int(np.searchsorted(p.ts, end + step, side="right"))
    ts = p.ts[i:j]
    if not len(ts) or ts[0] > start or ts[-1] < end or p.crowded[i:j].any():
        return False
    return bool(len(ts) < 2 or np.diff(ts).max() <= 1.5 * step)


def find_swap(s: SwapView, p: SwapView, others: Iterable[SwapView], config: GeometryConfig) -> Swap | None:
    """Did ``s`` swap people at a crossing, leaving ``p`` (a track of its identity in another calibrated view)?
    ``others``: the tracks of ``p``'s camera ``s`` could stand with now. See the module docstring."""
    if not len(s.ground) or not len(p.ground):
        return None
    ts, d = co_visible_pairs(s.ground, p.ground, config.max_dt_s)
    if len(ts) < config.min_common:
        return None
    smoothed = _smoothed(d)
    # 1. one person, 2. until they parted, 3. then two people
    together = smoothed <= config.same_place
    if together.sum() < config.min_common:
        return None
    last = int(np.flatnonzero(together)[-1])
    apart = np.flatnonzero(~together[last:])
    if not len(apart) or not (smoothed[last:] > config.different_place).any():
        return None
    together_until, parted_at = float(ts[last]), float(ts[last + int(apart[0])])
    # 4. s in a crossing when they parted, p clear
    lo = float(ts[max(last - 1, 0)])
    window = (s.ts >= lo) & (s.ts <= parted_at)
    crossing = np.flatnonzero(window & s.crowded)
    if not len(crossing):
        return None
    first, last_crowded = int(crossing[0]), int(crossing[-1])
    while first > 0 and s.crowded[first - 1]:
        first -= 1
    clear_after = np.flatnonzero(~s.crowded[last_crowded + 1:])
    if not len(clear_after):
        return None
    cut_ts = float(s.ts[last_crowded + 1 + int(clear_after[0])])
    if not _seen_clear(p, float(s.ts[first]), parted_at):
        return None
    # 5. s stands with exactly one other track of p's camera since the cut
    after = s.ground.since(cut_ts)
    near = []
    for w in (p, *others):  # p too: still within same_place of s since the cut, it is a rival
        if w.key[0] != p.key[0] or (w is not p and w.key == p.key):
            continue
        dist, n = co_visible_distance(after, w.ground, config.max_dt_s)  # type: ignore[arg-type]
        if n >= config.min_common and dist <= config.same_place:
            near.append(w.key)
    if len(near) != 1 or near[0] == p.key:
        return None
    return Swap(cut_ts, p.key, near[0], together_until, parted_at)
