"""Pseudo-identities from what the video itself proves, without a single label.

- The crops of one track are one person (the tracker's word; tracks are cut where it lost the person).
- Two tracks of one camera seen at the same time are two people: they never share a label (cannot-link).
- Two tracks of overlapping calibrated views standing at one ground place at the same time are one person: their
  labels merge. The verdict is the identity tracker's own (:func:`reid.identity.links.links_for`: the median
  ground distance over the moments both are seen, within ``same_place``, and no rival track as close); a ground
  DISAGREE (too far apart at the same time, or an impossible walk) is a cannot-link.
- Where a camera has no calibration, tracks of different cameras merge on appearance alone, but only above what
  the site itself shows for two different people: the ``appearance_quantile`` of the similarities of co-visible
  track pairs of one camera (certainly two people), and only as mutual best matches between the two cameras.

Merges go strongest first (most moments seen together; then highest similarity), each refused when it would put
two co-visible tracks of one camera, or a ground DISAGREE, into one label: constraints hold for whole groups,
not just for the pair being merged. Different recordings are never merged (their clocks do not relate).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reid.adapt.harvest import HarvestedTrack, Recording
from reid.identity.geometry import AGREE, DISAGREE, GroundTrack, co_visible_distance
from reid.identity.links import ContinuityConfig, TrackMotion, links_for

log = logging.getLogger(__name__)

Key = tuple[str, str, int]  # recording, camera, track id
_GROUND_ONLY = ContinuityConfig(max_gap_s=0)


@dataclass
class PseudoLabels:
    """Each kept track's label (1, 2, ...: Market-style person ids; 0 and -1 mean distractor and junk there)."""

    labels: dict[Key, int]
    ground_links: int  # cross-camera merges made on the ground
    appearance_links: int  # cross-camera merges made on appearance (uncalibrated cameras)
    refused: int  # merges a constraint refused
    cannot_links: int  # pairs that may never share a label
    appearance_threshold: float | None  # the similarity an appearance merge needed (None: none was tried)

    @property
    def num_labels(self) -> int:
        return len(set(self.labels.values()))

    def cameras_of(self, label: int) -> set[tuple[str, str]]:
        return {(k[0], k[1]) for k, v in self.labels.items() if v == label}

    def summary(self) -> dict:
        multi = sum(len(self.cameras_of(lab)) > 1 for lab in set(self.labels.values()))
        return {"tracks": len(self.labels), "pseudo_identities": self.num_labels,
                "seen_by_several_cameras": multi, "ground_links": self.ground_links,
                "appearance_links": self.appearance_links, "refused_merges": self.refused,
                "cannot_links": self.cannot_links,
                "appearance_threshold": None if self.appearance_threshold is None
                else round(self.appearance_threshold, 4)}


def overlapping(a: HarvestedTrack, b: HarvestedTrack) -> bool:
    """Seen during a common span of video time (same recording)."""
    return a.recording == b.recording and a.start_ts <= b.end_ts and b.start_ts <= a.end_ts


def _motion(t: HarvestedTrack, calibrated: bool) -> TrackMotion:
    ground = None
    if calibrated:
        ground = GroundTrack(max(8, len(t.ts)))
        for ts, (x, y) in zip(t.ts, t.ground, strict=True):
            if np.isfinite(x) and np.isfinite(y):
                ground.add(ts, (x, y))
    return TrackMotion(t.camera_id, t.track_id, t.start_ts, t.end_ts, np.asarray(t.boxes[0]),
                       np.asarray(t.boxes[-1]), ground)


class _Groups:
    """Union-find over tracks whose merges respect cannot-links between whole groups."""

    def __init__(self, keys: Sequence[Key], cannot: set[frozenset[Key]]) -> None:
        self.members: dict[Key, list[Key]] = {k: [k] for k in keys}
        self.root: dict[Key, Key] = {k: k for k in keys}
        self.cannot = cannot

    def find(self, k: Key) -> Key:
        while self.root[k] != k:
            self.root[k] = self.root[self.root[k]]
            k = self.root[k]
        return k

    def merge(self, a: Key, b: Key) -> bool | None:
        """True: merged; False: a constraint forbids it; None: already one group."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        if any(frozenset((x, y)) in self.cannot for x in self.members[ra] for y in self.members[rb]):
            return False
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.root[rb] = ra
        self.members[ra] += self.members.pop(rb)
        return True


def build_labels(recordings: Sequence[Recording], embeddings: Mapping[Key, np.ndarray] | None = None,
                 min_crops: int = 4, appearance_quantile: float = 0.99) -> PseudoLabels:
    """Pseudo-identities of the recordings' tracks (see the module docstring). ``embeddings``: each track's unit
    mean embedding under the starting weights, for the uncalibrated cameras' appearance merges. Tracks whose
    label gathers fewer than ``min_crops`` clean crops are left out (too little to learn from)."""
    tracks = {t.key: t for r in recordings for t in r.tracks}
    calibrated = {(r.name, c): h is not None for r in recordings for c, h in r.cameras.items()}
    cannot: set[frozenset[Key]] = set()
    ground_pairs: list[tuple[int, Key, Key]] = []
    appearance_pairs: list[tuple[Key, Key]] = []
    for rec in recordings:
        own = rec.tracks
        motions = {t.key: _motion(t, calibrated[(rec.name, t.camera_id)]) for t in own}
        for i, a in enumerate(own):
            for b in own[i + 1:]:
                if a.camera_id == b.camera_id:
                    if overlapping(a, b):
                        cannot.add(frozenset((a.key, b.key)))
                elif not (calibrated[(rec.name, a.camera_id)] and calibrated[(rec.name, b.camera_id)]):
                    appearance_pairs.append((a.key, b.key))
        if rec.geometry is None:
            continue
        by_motion = {(m.camera_id, m.track_id): k for k, m in motions.items()}
        for t in own:
            me = motions[t.key]
            if me.ground is None:
                continue
            others = [m for k, m in motions.items() if m.ground is not None and m.camera_id != t.camera_id]
            for other_key, verdict in links_for(me, others, _GROUND_ONLY, rec.geometry).items():
                k = by_motion[other_key]
                if verdict == DISAGREE:
                    cannot.add(frozenset((t.key, k)))
                elif verdict == AGREE and t.key < k:
                    _, n = co_visible_distance(me.ground, motions[k].ground, rec.geometry.max_dt_s)  # type: ignore
                    ground_pairs.append((n, t.key, k))
    groups = _Groups(list(tracks), cannot)
    ground_links = refused = 0
    for _, a, b in sorted(ground_pairs, key=lambda p: (-p[0], p[1], p[2])):
        done = groups.merge(a, b)
        ground_links += done is True
        refused += done is False
    appearance_links, threshold = 0, None
    if appearance_pairs and embeddings:
        different = [float(embeddings[a] @ embeddings[b]) for pair in cannot for a, b in [tuple(pair)]
                     if a[1] == b[1] and a in embeddings and b in embeddings]
        if len(different) >= 20:  # fewer: no measure of what two people look like here, so no appearance merge
            threshold = float(np.quantile(different, appearance_quantile))
            for a, b in _mutual_best(appearance_pairs, embeddings, threshold):
                done = groups.merge(a, b)
                appearance_links += done is True
                refused += done is False
        else:
            log.warning("only %d co-visible track pairs: too few to set an appearance threshold; uncalibrated "
                        "cameras' tracks stay apart", len(different))
    labels: dict[Key, int] = {}
    next_label = 1
    for root in sorted(groups.members):
        members = groups.members[root]
        if sum(len(tracks[k].crops) for k in members) < min_crops:
            continue
        for k in members:
            labels[k] = next_label
        next_label += 1
    return PseudoLabels(labels, ground_links, appearance_links, refused, len(cannot), threshold)


def _mutual_best(pairs: Sequence[tuple[Key, Key]], embeddings: Mapping[Key, np.ndarray],
                 threshold: float) -> list[tuple[Key, Key]]:
    """Pairs at or above ``threshold`` that are each other's best match between their two cameras, most similar
    first."""
    scored = [(float(embeddings[a] @ embeddings[b]), a, b) for a, b in pairs if a in embeddings and b in embeddings]
    best: dict[tuple[Key, tuple[str, str]], float] = {}
    for s, a, b in scored:
        for x, y in ((a, b), (b, a)):
            slot = (x, (y[0], y[1]))
            best[slot] = max(best.get(slot, -2.0), s)
    out = [(s, a, b) for s, a, b in scored if s >= threshold
           and s >= best[(a, (b[0], b[1]))] and s >= best[(b, (a[0], a[1]))]]
    return [(a, b) for _, a, b in sorted(out, key=lambda p: (-p[0], p[1], p[2]))]
