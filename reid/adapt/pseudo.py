"""Pseudo-identities from what the video itself proves, without a single label.

- The crops of one track are one person (the tracker's word; tracks are cut where it lost the person). A
  calibrated camera's track comes cut where it left a crossing (:func:`reid.adapt.harvest.pieces`): its pieces
  are one person again unless the ground put two of them with different people (:func:`_rejoin_pieces`).
- Two tracks of one camera seen at the same time are two people: they never share a label (cannot-link).
- Two tracks of overlapping calibrated views standing at one ground place at the same time are one person: their
  labels merge. The verdict is the identity tracker's own (:func:`reid.identity.links.links_for`: the median
  ground distance over the moments both are seen, within ``same_place``, and where two tracks of one view both
  are, the one the per-moment joint association picks); a ground DISAGREE (too far apart at the same time, or an
  impossible walk) is a cannot-link.
- Where a camera has no calibration, tracks of different cameras merge on appearance alone, but only above what
  the site itself shows for two different people seen from two cameras: the ``appearance_quantile`` of the
  similarities of cross-camera pairs the video proves to be two people (:func:`cross_camera_negatives`), and only
  as mutual best matches between groups of tracks, in rounds (:func:`_merge_on_appearance`).

Merges go strongest first (most moments seen together; then highest similarity), each refused when it would put
two co-visible tracks of one camera, or a ground DISAGREE, into one label: constraints hold for whole groups,
not just for the pair being merged. Different recordings are never merged (their clocks do not relate).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

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
    # Each kept track's group before the appearance merges: what the video proves without the starting weights
    # (one track; ground agreement). The held-out check uses these, so it cannot reward those weights' own merges.
    evidence: dict[Key, Key]
    apart: set[frozenset[int]]  # pairs of labels proven two people (a cannot-link between their tracks)
    rejoined: int = 0  # consecutive pieces of one track put back together (:func:`_rejoin_pieces`)

    @property
    def num_labels(self) -> int:
        return len(set(self.labels.values()))

    def cameras_of(self, label: int) -> set[tuple[str, str]]:
        return {(k[0], k[1]) for k, v in self.labels.items() if v == label}

    def unknown_pairs(self) -> list[tuple[int, int]]:
        """Pairs of labels nothing proves to be two people: one person may hold both (a person the tracker lost
        and found again, one seen by two uncalibrated cameras the appearance merge did not join, one in two
        recordings). Training must not teach the network to tell them apart."""
        labs = sorted(set(self.labels.values()))
        return [(a, b) for i, a in enumerate(labs) for b in labs[i + 1:] if frozenset((a, b)) not in self.apart]

    def summary(self) -> dict:
        multi = sum(len(self.cameras_of(lab)) > 1 for lab in set(self.labels.values()))
        return {"tracks": len(self.labels), "pseudo_identities": self.num_labels,
                "seen_by_several_cameras": multi, "ground_links": self.ground_links,
                "appearance_links": self.appearance_links, "refused_merges": self.refused,
                "cannot_links": self.cannot_links, "pieces_rejoined": self.rejoined,
                "label_pairs_proven_apart": len(self.apart),
                "label_pairs_unknown": len(self.unknown_pairs()),
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

    def forbidden(self, a: Key, b: Key) -> bool:
        """Whether the groups of ``a`` and ``b`` hold a pair that may never share a label."""
        return any(frozenset((x, y)) in self.cannot for x in self.members[self.find(a)]
                   for y in self.members[self.find(b)])

    def merge(self, a: Key, b: Key) -> bool | None:
        """True: merged; False: a constraint forbids it; None: already one group."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        if self.forbidden(ra, rb):
            return False
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.root[rb] = ra
        self.members[ra] += self.members.pop(rb)
        return True


def build_labels(recordings: Sequence[Recording], embeddings: Mapping[Key, np.ndarray] | None = None,
                 min_crops: int = 4, appearance_quantile: float = 0.95) -> PseudoLabels:
    """Pseudo-identities of the recordings' tracks (see the module docstring). ``embeddings``: each track's unit
    mean embedding under the starting weights, for the uncalibrated cameras' appearance merges. Tracks whose
    label gathers fewer than ``min_crops`` clean crops are left out (too little to learn from).

    ``appearance_quantile`` 0.95: a merge needs a similarity that only one pair in twenty of two people seen from
    two cameras reaches, and mutual best matches; ``benchmarks/pseudo_labels.py`` scores 0.9, 0.95 and 0.99 with
    the terrace1 clips' calibration hidden against their ground truth."""
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
            # The track's own camera's tracks too: continuity is off, so they only compete in a joint association.
            others = [m for m in motions.values() if m.ground is not None]
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
    rejoined = _rejoin_pieces(groups, tracks)
    evidence = {k: groups.find(k) for k in tracks}
    appearance_links, threshold = 0, None
    if appearance_pairs and embeddings:
        different = cross_camera_negatives(list(tracks.values()), appearance_pairs, embeddings)
        if len(different) >= 20:  # fewer: no measure of what two people look like here, so no appearance merge
            threshold = float(np.quantile(different, appearance_quantile))
            appearance_links, blocked = _merge_on_appearance(groups, appearance_pairs, embeddings, threshold)
            refused += blocked
        else:
            log.warning("only %d cross-camera pairs known to be two people: too few to set an appearance "
                        "threshold; uncalibrated cameras' tracks stay apart", len(different))
    labels: dict[Key, int] = {}
    next_label = 1
    for root in sorted(groups.members):
        members = groups.members[root]
        if sum(len(tracks[k].crops) for k in members) < min_crops:
            continue
        for k in members:
            labels[k] = next_label
        next_label += 1
    apart = {frozenset((labels[a], labels[b])) for a, b in map(tuple, cannot) if a in labels and b in labels}
    return PseudoLabels(labels, ground_links, appearance_links, refused, len(cannot), threshold,
                        {k: evidence[k] for k in labels}, apart, rejoined)


def _rejoin_pieces(groups: _Groups, tracks: Mapping[Key, HarvestedTrack]) -> int:
    """Put each track's consecutive pieces back into one group, unless the ground placed them with different
    tracks of another camera (no track of that camera, pieces counted as their track, in both groups): there the
    tracker came out of the crossing on someone else, as the other view shows. Where nothing contradicts the
    tracker, its word stands (a piece alone would be a label of its own, which training could not set apart from
    the rest of its person). A constraint still refuses a merge. Returns the merges made."""
    def whole(k: Key) -> Key:
        parent = tracks[k].parent
        return k if parent is None else (k[0], k[1], parent)

    def partners(k: Key) -> set[Key]:
        return {whole(m) for m in groups.members[groups.find(k)] if m[1] != k[1]}

    by_track: defaultdict[Key, list[Key]] = defaultdict(list)
    for k, t in tracks.items():
        if t.parent is not None:
            by_track[whole(k)].append(k)
    made = 0
    for keys in by_track.values():
        keys.sort(key=lambda k: tracks[k].start_ts)
        for a, b in pairwise(keys):
            pa, pb = partners(a), partners(b)
            if not (pa and pb and not pa & pb):
                made += groups.merge(a, b) is True
    return made


def cross_camera_negatives(tracks: Sequence[HarvestedTrack], pairs: Sequence[tuple[Key, Key]],
                           embeddings: Mapping[Key, np.ndarray]) -> list[float]:
    """Similarities of cross-camera track pairs the video proves to be two people, without labels.

    Tracks of one camera seen at the same time are different people, so a track ``b`` of another camera is at
    most one of them: whenever ``a`` is not ``b``'s most similar track among ``a`` and the tracks co-visible with
    it, the pair (a, b) counts as two people (if ``b``'s person is the less similar one, a same-person pair slips
    in: rarely, and only raising the estimate). Why not the co-visible pairs of one camera themselves: they share
    the camera's light, background and angle, and score higher than two people seen from two cameras (terrace1,
    checked with its ground truth: median 0.75 against 0.68), so a threshold set on them merges too little.
    """
    keys = sorted(t.key for t in tracks if t.key in embeddings)
    if not keys:
        return []
    index = {k: i for i, k in enumerate(keys)}
    e = np.stack([embeddings[k] for k in keys])
    sim = e @ e.T
    asked = np.zeros(sim.shape, dtype=bool)
    for a, b in pairs:
        if a in index and b in index:
            asked[index[a], index[b]] = asked[index[b], index[a]] = True
    by_camera: defaultdict[tuple[str, str], list[HarvestedTrack]] = defaultdict(list)
    for t in tracks:
        if t.key in index:
            by_camera[(t.recording, t.camera_id)].append(t)
    out: list[float] = []
    for own in by_camera.values():
        for a in own:
            rivals = [index[c.key] for c in own if c.key != a.key and overlapping(a, c)]
            if rivals:
                i = index[a.key]
                beaten = asked[i] & (sim[rivals].max(axis=0) > sim[i])
                out += sim[i, beaten].tolist()
    return out


def _merge_on_appearance(groups: _Groups, pairs: Sequence[tuple[Key, Key]], embeddings: Mapping[Key, np.ndarray],
                         threshold: float) -> tuple[int, int]:
    """Merge groups of tracks on appearance, in rounds: two groups merge when each is the other's most similar
    group (the mean similarity of their tracks' cross-camera ``pairs``) and that similarity reaches
    ``threshold``. Groups, not tracks: once a person's tracks of two cameras are one group, the person's next
    track in either camera is compared with both, and one person leaving and coming back finds their group.
    Returns (merges made, merges a constraint refused)."""
    sim = {(a, b): float(embeddings[a] @ embeddings[b]) for a, b in pairs if a in embeddings and b in embeddings}
    made = refused = 0
    while True:
        total: defaultdict[tuple[Key, Key], list[float]] = defaultdict(list)
        for (a, b), s in sim.items():
            ra, rb = groups.find(a), groups.find(b)
            if ra != rb:
                total[(ra, rb) if ra < rb else (rb, ra)].append(s)
        scored = {pair: float(np.mean(v)) for pair, v in total.items() if not groups.forbidden(*pair)}
        best: dict[Key, float] = {}
        for (ra, rb), s in scored.items():
            best[ra] = max(best.get(ra, -2.0), s)
            best[rb] = max(best.get(rb, -2.0), s)
        chosen = sorted(((s, ra, rb) for (ra, rb), s in scored.items()
                         if s >= threshold and s >= best[ra] and s >= best[rb]), key=lambda p: (-p[0], p[1], p[2]))
        merged = 0
        for _, ra, rb in chosen:
            done = groups.merge(ra, rb)
            merged += done is True
            refused += done is False
        made += merged
        if not merged:
            return made, refused
