"""What a site's unlabeled video says about its ground rules and its appearance threshold.

Three kinds of pairs need no labels (the same facts :mod:`reid.adapt` learns from):

- two tracks of **one camera** seen at the same time are two people: their ground distances are the
  *different-people* distribution, and their appearance similarities the negatives;
- across two calibrated views, at each moment, a track and its **mutual nearest** track of the other view (each is
  the other's nearest) are mostly the same person: their ground distances hold the *same-person* mode, mixed with
  the people seen by one view only (whose nearest is someone else, far away);
- a track's own ground path gives walking speeds.

The same-person windows also show whether two views' calibrations agree: the displacement from one view's foot
point to the other's is noise around zero when they do, and around a constant vector when one homography puts the
whole floor a fixed distance off (:func:`view_offsets`).

Distances are medians over windows of ``WINDOW_S`` seconds of the moments both tracks are seen (as the matcher's
rule takes a median over the common moments, with the recording's ``geometry.max_dt_s`` and ``min_common``), so
one bad foot point does not count as a sample.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from reid.adapt.harvest import HarvestedTrack, Recording, unit
from reid.identity.geometry import nearest_in_time

log = logging.getLogger(__name__)

Key = tuple[str, str, int]

WINDOW_S = 2.0  # the span of one distance sample
MAX_DT_S = 0.25  # sightings of two cameras this close in time are one moment (geometry.max_dt_s's default)
MIN_MOMENTS = 3  # moments in a window for its median to count (geometry.min_common's default)
MIN_CHANCE_SHIFT_S = 5.0  # chance moves one view by half the recording: less than this is no unrelated moment
PACE_SPAN_S = 2.0  # walking pace is measured over this span, on median-filtered positions
MIN_PACE_TRACK_S = 3.0  # tracks shorter than this give no pace


def ground_path(t: HarvestedTrack) -> tuple[np.ndarray, np.ndarray]:
    """The track's times and ground positions, the sightings without one (beyond the horizon) left out."""
    ts, g = np.asarray(t.ts, np.float64), np.asarray(t.ground, np.float64).reshape(-1, 2)
    ok = np.isfinite(g).all(axis=1)
    return ts[ok], g[ok]


def window_distances(a: HarvestedTrack, b: HarvestedTrack, max_dt_s: float = MAX_DT_S,
                     min_moments: int = MIN_MOMENTS) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """(window start, median ground distance, where: the median position of ``a`` then, shift: the median of
    ``b``'s position minus ``a``'s) for each ``WINDOW_S`` window in which both tracks are seen at ``min_moments``
    common moments (sightings within ``max_dt_s``) or more; empty for tracks never seen together."""
    ta, ga = ground_path(a)
    tb, gb = ground_path(b)
    if not len(ta) or not len(tb) or ta[0] > tb[-1] + max_dt_s or tb[0] > ta[-1] + max_dt_s:
        return []
    j, close = nearest_in_time(tb, ta, max_dt_s)
    t, at, step = ta[close], ga[close], gb[j[close]] - ga[close]
    d = np.linalg.norm(step, axis=1)
    if len(t) < min_moments:
        return []
    slot = np.floor(t / WINDOW_S).astype(np.int64)
    out = []
    for s in np.unique(slot):
        m = slot == s
        if m.sum() >= min_moments:
            out.append((float(s * WINDOW_S), float(np.median(d[m])), np.median(at[m], axis=0),
                        np.median(step[m], axis=0)))
    return out


class Window(NamedTuple):
    """Two tracks of two calibrated cameras seen together during one window."""

    a: Key
    b: Key
    start: float
    distance: float
    where: np.ndarray  # (x, y): where ``a`` stood
    shift: np.ndarray  # (dx, dy): where ``b`` stood minus where ``a`` stood


@dataclass
class PairEvidence:
    """Two calibrated cameras of one recording: every co-visible window of their tracks, and the same with the
    second camera's tracks moved half the recording in time (``chance``: people who are not together, at the
    crowd's own density: what the distances would be if the calibrations did not match)."""

    cameras: tuple[str, str]
    windows: list[Window] = field(default_factory=list)
    chance: PairEvidence | None = None
    moved_from: dict[Key, Key] = field(default_factory=dict)  # in ``chance``: a moved track's key -> its own

    def mutual_nearest(self) -> list[Window]:
        """Windows whose two tracks are each other's nearest of the other camera in that window."""
        by_slot: dict[float, list[Window]] = {}
        for w in self.windows:
            by_slot.setdefault(w.start, []).append(w)
        out = []
        for rows in by_slot.values():
            best_a: dict[Key, float] = {}
            best_b: dict[Key, float] = {}
            for w in rows:
                best_a[w.a] = min(best_a.get(w.a, np.inf), w.distance)
                best_b[w.b] = min(best_b.get(w.b, np.inf), w.distance)
            out += [w for w in rows if w.distance == best_a[w.a] == best_b[w.b]]
        return out


@dataclass
class GroundEvidence:
    """Every ground measurement of the recordings' calibrated cameras."""

    pairs: list[PairEvidence]  # one per (recording, camera pair)
    different: np.ndarray  # window distances of co-visible tracks of one camera: two people
    paces: np.ndarray  # per track: its typical fast pace (90th percentile of its speeds), units per second
    seen: dict[str, np.ndarray]  # per camera: the ground positions where it saw people

    @functools.cached_property
    def regions(self) -> dict[str, np.ndarray | None]:
        """Per camera, the convex floor where it saw people (:func:`seen_region`)."""
        return {c: seen_region(p) for c, p in self.seen.items()}

    def chance_floor(self, pair: PairEvidence) -> list[Window]:
        """The chance pairs on the shared floor, but those of two tracks that were really mutual nearest (one person
        standing still for longer than the shift would meet themselves)."""
        if pair.chance is None:
            return []
        real = {(w.a, w.b) for w in self.shared_floor(pair)}
        return [w for w in self.shared_floor(pair.chance) if (w.a, pair.chance.moved_from.get(w.b)) not in real]

    def shared_floor(self, pair: PairEvidence | None) -> list[Window]:
        """The pair's mutual-nearest windows on the floor both cameras see (where they saw people): there nearly
        everyone is seen by both views, so a track's mutual nearest is the same person unless a calibration is off
        (elsewhere it is someone else, whom the other view happens to see)."""
        if pair is None:
            return []
        a, b = (self.regions.get(c) for c in pair.cameras)
        if a is None or b is None:
            return []
        return [w for w in pair.mutual_nearest() if inside(a, w.where) and inside(b, w.where)]

    @property
    def same_candidates(self) -> np.ndarray:
        """Distances of every camera pair's mutual-nearest windows on their shared floor: the same-person mode,
        and the few pairs one view missed."""
        return np.array([w.distance for p in self.pairs for w in self.shared_floor(p)])


@dataclass(frozen=True)
class ViewOffset:
    """How far camera ``b`` puts a person from where the reference camera ``a`` puts them: the median of the
    same-person windows' shifts, over ``n`` windows, with its standard error (per axis), and those windows' median
    distance."""

    a: str
    b: str
    shift: np.ndarray  # (dx, dy): b's position minus a's
    stderr: np.ndarray  # (dx, dy)
    n: int
    distance: float


def view_offsets(ground: GroundEvidence, below: float) -> list[ViewOffset]:
    """Per pair of calibrated cameras (pooled over recordings), the shift of the shared-floor mutual-nearest
    windows closer than ``below`` (different people's 5th percentile: the same-person mode, as the fit takes it).
    A median, so the few windows of two people that slip under ``below`` do not move it; its standard error is the
    median's (1.2533 sigma / sqrt(n), sigma from the median absolute deviation)."""
    same: dict[tuple[str, str], list[Window]] = {}
    for pair in ground.pairs:
        same.setdefault(pair.cameras, []).extend(w for w in ground.shared_floor(pair) if w.distance < below)
    out = []
    for (a, b), windows in sorted(same.items()):
        if not windows:
            continue
        x = np.asarray([w.shift for w in windows], np.float64)
        med = np.median(x, axis=0)
        sigma = 1.4826 * np.median(np.abs(x - med), axis=0)
        out.append(ViewOffset(a, b, med, 1.2533 * sigma / math.sqrt(len(x)), len(x),
                              float(np.median([w.distance for w in windows]))))
    return out


def shifted(recordings: Sequence[Recording], by: Mapping[str, np.ndarray]) -> list[Recording]:
    """The recordings with ``by[camera]`` added to that camera's ground positions (and homography): what the
    pipeline will see once the camera's ``ground_offset`` says so."""
    out = []
    for r in recordings:
        tracks = []
        for t in r.tracks:
            d = by.get(t.camera_id)
            if d is not None:
                t = dataclasses.replace(t, ground=[(x + d[0], y + d[1]) for x, y in t.ground])
            tracks.append(t)
        cams = {c: h if h is None or c not in by else h.translated(*by[c]) for c, h in r.cameras.items()}
        out.append(dataclasses.replace(r, cameras=cams, tracks=tracks))
    return out


def _pace(t: HarvestedTrack) -> float | None:
    """The 90th percentile of the track's speed over ``PACE_SPAN_S``, on positions median-filtered over five
    sightings (a foot point jumps when the legs are hidden)."""
    from scipy.ndimage import median_filter

    ts, g = ground_path(t)
    if len(ts) < 10 or ts[-1] - ts[0] < MIN_PACE_TRACK_S:
        return None
    g = np.c_[median_filter(g[:, 0], 5, mode="nearest"), median_filter(g[:, 1], 5, mode="nearest")]
    j = np.searchsorted(ts, ts + PACE_SPAN_S)
    ok = (j < len(ts))
    i, j = np.nonzero(ok)[0], j[ok]
    ok = ts[j] - ts[i] < 1.5 * PACE_SPAN_S  # a gap in the sightings is not a span
    i, j = i[ok], j[ok]
    if len(i) < 5:
        return None
    speeds = np.linalg.norm(g[j] - g[i], axis=1) / (ts[j] - ts[i])
    return float(np.percentile(speeds, 90))


def _moved(t: HarvestedTrack, dt: float) -> HarvestedTrack:
    """The track ``dt`` seconds later (its key marks the move, so it never pairs with itself)."""
    moved = HarvestedTrack(t.recording, t.camera_id, t.track_id * 2 + (dt > 0) + 1_000_000)
    moved.ts, moved.ground = [ts + dt for ts in t.ts], t.ground
    return moved


def ground_evidence(recordings: Sequence[Recording]) -> GroundEvidence:
    pairs: list[PairEvidence] = []
    different: list[float] = []
    paces: list[float] = []
    seen: dict[str, list[np.ndarray]] = {}
    for r in recordings:
        rules = {"max_dt_s": r.geometry.max_dt_s, "min_moments": r.geometry.min_common} if r.geometry else {}
        calibrated = sorted(c for c, h in r.cameras.items() if h is not None)
        tracks = {c: [t for t in r.tracks if t.camera_id == c] for c in calibrated}
        for c, ts in tracks.items():
            for a, b in itertools.combinations(ts, 2):
                different += [w[1] for w in window_distances(a, b, **rules)]
            for t in ts:
                if (p := _pace(t)) is not None:
                    paces.append(p)
                seen.setdefault(c, []).append(ground_path(t)[1])
        half = 0.5 * max(r.duration_s.values(), default=0.0)
        for ca, cb in itertools.combinations(calibrated, 2):
            pair = PairEvidence((ca, cb), chance=PairEvidence((ca, cb)))
            moved = [_moved(b, dt) for b in tracks[cb] for dt in (half, -half)] if half >= MIN_CHANCE_SHIFT_S else []
            pair.chance.moved_from = {m.key: b.key for m, b in zip(moved, [b for b in tracks[cb] for _ in (0, 1)],
                                                                      strict=True)}
            for a in tracks[ca]:
                for b in tracks[cb]:
                    pair.windows += [Window(a.key, b.key, *w) for w in window_distances(a, b, **rules)]
                for b in moved:
                    pair.chance.windows += [Window(a.key, b.key, *w) for w in window_distances(a, b, **rules)]
            pairs.append(pair)
    return GroundEvidence(pairs, np.array(different), np.array(paces),
                          {c: np.concatenate(v) for c, v in seen.items() if v})


def seen_region(points: np.ndarray) -> np.ndarray | None:
    """The convex hull (N, 2) of where a camera saw people's feet (1st-99th percentile box trims stray points)."""
    if len(points) < 3:
        return None
    lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    kept = points[((points >= lo) & (points <= hi)).all(axis=1)]
    if len(kept) < 3:
        return None
    return cv2.convexHull(kept.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def inside(region: np.ndarray, xy: np.ndarray) -> bool:
    return cv2.pointPolygonTest(region.astype(np.float32).reshape(-1, 1, 2), (float(xy[0]), float(xy[1])),
                                False) >= 0


def overlap_share(a: np.ndarray, b: np.ndarray) -> float:
    """The area two convex regions share, as a fraction of the smaller one."""
    shared, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    smaller = min(cv2.contourArea(a.astype(np.float32)), cv2.contourArea(b.astype(np.float32)))
    return float(shared) / smaller if smaller > 0 else 0.0


@dataclass
class AppearanceEvidence:
    """Track-level cosine similarities (unit mean embeddings of each track's clean crops)."""

    different: np.ndarray  # co-visible tracks of one camera: two people (the same view flatters their similarity)
    same_track: np.ndarray  # the first and second half of one track: one person, one view
    cross_same_place: np.ndarray  # tracks of two views that stood at one place: one person seen from two views
    cross_apart: np.ndarray  # tracks of two views seen at the same time far apart: two people, as the matcher sees
    cross_co_visible: dict[tuple[str, str], list[tuple[Key, Key, float]]]  # per camera pair: co-visible track pairs

    def mutual_best(self, cameras: tuple[str, str]) -> list[float]:
        """Similarities of the co-visible cross-view pairs whose tracks are each other's most similar."""
        pairs = self.cross_co_visible.get(cameras, [])
        best: dict[Key, float] = {}
        for a, b, sim in pairs:
            best[a] = max(best.get(a, -2.0), sim)
            best[b] = max(best.get(b, -2.0), sim)
        return [sim for a, b, sim in pairs if sim == best[a] == best[b]]


def pair_medians(ground: GroundEvidence) -> dict[frozenset[Key], float]:
    """Each cross-camera pair of co-visible tracks: the median of its window distances."""
    by_pair: dict[frozenset[Key], list[float]] = {}
    for pair in ground.pairs:
        for w in pair.windows:
            by_pair.setdefault(frozenset((w.a, w.b)), []).append(w.distance)
    return {k: float(np.median(v)) for k, v in by_pair.items()}


def appearance_evidence(recordings: Sequence[Recording], embed: Mapping[Key, np.ndarray],
                        halves: Mapping[Key, tuple[np.ndarray, np.ndarray]], medians: Mapping[frozenset[Key], float],
                        same_place: float | None, different_place: float | None) -> AppearanceEvidence:
    """``embed``: each track's unit mean embedding; ``halves``: the means of its first and second half (tracks
    long enough); ``medians``: :func:`pair_medians`, judged against the suggested ``same_place`` and
    ``different_place`` (None: no ground evidence)."""
    different, cross_same, cross_apart = [], [], []
    cross: dict[tuple[str, str], list[tuple[Key, Key, float]]] = {}
    for r in recordings:
        tracks = [t for t in r.tracks if t.key in embed]
        for a, b in itertools.combinations(tracks, 2):
            if not (a.start_ts <= b.end_ts and b.start_ts <= a.end_ts):
                continue
            sim = float(embed[a.key] @ embed[b.key])
            if a.camera_id == b.camera_id:
                different.append(sim)
                continue
            first, second = sorted((a, b), key=lambda t: t.camera_id)
            cross.setdefault((first.camera_id, second.camera_id), []).append((first.key, second.key, sim))
            d = medians.get(frozenset((a.key, b.key)))
            if d is not None and same_place is not None and d <= same_place:
                cross_same.append(sim)
            elif d is not None and different_place is not None and d >= different_place:
                cross_apart.append(sim)
    same_track = [float(unit(h1) @ unit(h2)) for h1, h2 in halves.values()]
    return AppearanceEvidence(np.array(different), np.array(same_track), np.array(cross_same),
                              np.array(cross_apart), cross)
