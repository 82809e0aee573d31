"""Track-to-track evidence beyond appearance: where people stand, and where a lost track was last seen.

The match stage knows every running and recently ended track's boxes (and, for calibrated cameras, ground
positions); the matcher only knows identities and their embeddings. This module turns the first into per-pair
verdicts the matcher can use, ``{(camera_id, track_id): AGREE | DISAGREE}`` for one track:

- **ground** (two calibrated cameras): :func:`reid.identity.geometry.judge`. When several tracks of one camera,
  seen at the same time, all agree with the track (two people walking side by side), the views' sightings are
  associated jointly at each moment (:func:`moment_partner`): the one that is the track's mutual nearest at most
  of their common moments is its partner, and no other; with no such majority, none of them is.
- **continuity** (one camera): a track that starts within ``max_gap_s`` of another's last sighting, where that
  one could have walked to (image distance in box heights, or ground distance at walking speed), is probably
  the same person found again after an occlusion (CONTINUES: weaker evidence than being seen at one place at the
  same time, which wins when the two point to different identities). Again only a unique candidate counts.

A verdict is evidence, not a decision: the matcher still requires a minimum appearance similarity for an AGREE
to join, and a DISAGREE only forbids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reid.identity.geometry import (
    AGREE,
    CONTINUES,
    DISAGREE,
    GeometryConfig,
    GroundTrack,
    judge,
    nearest_in_time,
)

TrackKey = tuple[str, int]


class ContinuityConfig(BaseModel):
    """Re-association of a person the tracker lost and found again in the same camera."""

    model_config = ConfigDict(extra="forbid")

    max_gap_s: float = Field(4.0, ge=0, description="longest time lost (0: off)")
    max_shift: float = Field(
        1.0, gt=0, description="uncalibrated cameras: largest move of the box centre, in box heights, plus the same "
        "again per second lost"
    )
    appearance_quantile: float | None = Field(
        0.95, gt=0, le=1, description="a continuity link counts only when the track looks more like the identity "
        "than this share of the pairs of two people seen together in one camera (the site's own measure over all "
        "its cameras, on the weights in use: reid.identity.links.TwoPeopleLevels); until min_pairs such pairs are "
        "seen, only when it passes matcher.threshold. null: link_min_similarity alone, on every embedding's scale"
    )
    min_pairs: int = Field(10, ge=1, description="pairs of two people the cameras must have shown before the "
                           "appearance_quantile level is used")


@dataclass
class TwoPeopleLevels:
    """The site's two-people level: the cosines between the embeddings of two tracks of one camera seen at the
    same time (two people, proven by the video), the latest ``max_samples`` of them over all cameras; :meth:`level`
    is the share ``quantile`` of them.

    Why measured, not set: what two people score depends on the weights (site-adapted weights spread people
    apart: on campus4 two people of one camera score 0.48 to 0.52 at the median, against 0.73 to 0.77 with the
    default weights). A continuity link is the weakest evidence the matcher takes; an appearance that two different
    people of the site often reach backs nothing.

    Why one level for all cameras, not one per camera: a camera shows few such pairs (15 to 18 per camera in
    campus4's 80 s), and the 95th percentile of ten of them is nearly their maximum: campus4's cameras read 0.76 to
    0.86 at ten pairs and 0.81 to 0.84 at the end, so the noise of a camera's own estimate is larger than the
    difference between cameras, and a camera whose early pairs happened to be unlike let wrong links through.
    """

    quantile: float
    min_pairs: int
    max_samples: int = 500
    _samples: deque[float] = field(init=False)
    _pairs: dict[str, int] = field(default_factory=dict)  # pairs seen per camera, for the stats
    _level: float | None = None  # computed once between two adds
    _stale: bool = True

    def __post_init__(self) -> None:
        self._samples = deque(maxlen=self.max_samples)

    def add(self, camera_id: str, cosine: float) -> None:
        self._samples.append(float(cosine))
        self._pairs[camera_id] = self._pairs.get(camera_id, 0) + 1
        self._stale = True

    def level(self) -> float | None:
        """The level; None until ``min_pairs`` pairs are seen. Every unplaced track of every decision asks: it is
        computed again only after new pairs arrived."""
        if self._stale:
            n = len(self._samples)
            self._level = None if n < self.min_pairs else \
                float(np.quantile(np.fromiter(self._samples, np.float64, n), self.quantile))
            self._stale = False
        return self._level

    def counts(self) -> dict[str, int]:
        """Pairs seen per camera since the start (the level reads the latest ``max_samples`` of them)."""
        return dict(self._pairs)


@dataclass
class TrackMotion:
    """What the link rules need of a track: its camera, time span, first/last boxes (xyxy) and ground path."""

    camera_id: str
    track_id: int
    start_ts: float
    last_seen_ts: float
    first_box: np.ndarray
    last_box: np.ndarray
    ground: GroundTrack | None = None

    @property
    def key(self) -> TrackKey:
        return (self.camera_id, self.track_id)


def _centre_and_height(box: np.ndarray) -> tuple[np.ndarray, float]:
    b = np.asarray(box, dtype=np.float64)
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]), float(max(b[3] - b[1], 1.0))


def continues(earlier: TrackMotion, later: TrackMotion, config: ContinuityConfig,
              geometry: GeometryConfig | None) -> bool:
    """Could ``later`` (same camera) be ``earlier`` found again?"""
    gap = later.start_ts - earlier.last_seen_ts
    if not 0 < gap <= config.max_gap_s:
        return False
    if geometry is not None and earlier.ground is not None and later.ground is not None \
            and len(earlier.ground) and len(later.ground):
        a, b = earlier.ground.xy[-1], later.ground.xy[0]
        return float(np.hypot(b[0] - a[0], b[1] - a[1])) <= geometry.same_place + geometry.max_speed * gap
    ca, ha = _centre_and_height(earlier.last_box)
    cb, hb = _centre_and_height(later.first_box)
    return float(np.linalg.norm(cb - ca)) <= config.max_shift * max(ha, hb) * (1.0 + gap)


def _positions_at(g: GroundTrack, ts: np.ndarray, max_dt_s: float) -> np.ndarray:
    """The track's ground position at each of ``ts`` (its sighting nearest in time, within ``max_dt_s``), NaN
    where it was not seen."""
    out = np.full((len(ts), 2), np.nan)
    if not len(g) or not len(ts):
        return out
    j, close = nearest_in_time(g.ts, ts, max_dt_s)
    out[close] = g.xy[j[close]]
    return out


def moment_partner(track: TrackMotion, rivals: list[TrackMotion], competitors: Iterable[TrackMotion],
                   geometry: GeometryConfig) -> TrackKey | None:
    """Which of ``rivals`` (tracks of one other camera that each agree with ``track`` on the ground, some seen at the
    same time) is ``track``'s partner, by a joint association of the two views' sightings at each of ``track``'s
    moments: a rival and ``track`` pair up at a moment when each is the other's nearest (``track`` against the
    rivals seen then, the rival against ``track`` and ``competitors``, the other tracks of ``track``'s camera seen
    then) within ``same_place``, strictly nearer than the others (a tie pairs nobody). The partner pairs up at more
    than half of the moments it shares with ``track``, and at least ``min_common``; None when no rival does, or
    more than one (two fragments of one person that overlap briefly can both: neither is then taken).

    Why per moment: over a whole window, two people side by side both lie within ``same_place`` of the track;
    moment by moment, the one who is really there is nearer far more often, once the views agree on where the
    floor is (``ground_offset``). A rival a competitor is nearer to is that competitor's, not the track's."""
    g = track.ground
    if g is None or not len(g):
        return None
    ts, xy = g.ts, g.xy
    dt = geometry.max_dt_s
    at = np.stack([_positions_at(r.ground, ts, dt) for r in rivals])  # type: ignore[arg-type]  # (R, N, 2)
    to_track = np.linalg.norm(at - xy[None], axis=2)  # (R, N), NaN where unseen
    seen = np.isfinite(to_track)
    dist = np.where(seen, to_track, np.inf)
    order = np.sort(dist, axis=0)
    # the track's nearest rival per moment, -1 where none is strictly nearer than the others (a tie is nobody's:
    # the answer must not depend on the order the rivals come in)
    nearest = np.where(order[0] < (order[1] if len(rivals) > 1 else np.inf), dist.argmin(axis=0), -1)
    others = [c for c in competitors if c.key != track.key and c.ground is not None and len(c.ground)]
    rival_best = np.full((len(rivals), len(ts)), np.inf)  # per rival and moment: its nearest competitor's distance
    for c in others:
        pos = _positions_at(c.ground, ts, dt)  # type: ignore[arg-type]
        d = np.linalg.norm(at - pos[None], axis=2)
        rival_best = np.fmin(rival_best, np.where(np.isfinite(d), d, np.inf))
    winners = []
    for k, r in enumerate(rivals):
        mutual = seen[k] & (nearest == k) & (to_track[k] < rival_best[k]) & (to_track[k] <= geometry.same_place)
        votes, common = int(mutual.sum()), int(seen[k].sum())
        if votes >= geometry.min_common and 2 * votes > common:
            winners.append(r.key)
    return winners[0] if len(winners) == 1 else None


def links_for(track: TrackMotion, others: Iterable[TrackMotion], continuity: ContinuityConfig,
              geometry: GeometryConfig | None, wanted: Container[TrackKey] | None = None) -> dict[TrackKey, int]:
    """The verdicts on ``track`` against ``others`` (its own key is skipped); pairs with no evidence are absent.

    ``wanted``: the keys whose verdicts the caller will use (default: all). The ground rule costs array work per
    pair, so another camera's track outside ``wanted`` is judged only when it could be the rival of a wanted
    AGREE (same camera, seen at the same time); the verdicts returned on wanted keys are the same either way.
    """
    out: dict[TrackKey, int] = {}
    agree: dict[str, list[tuple[TrackMotion, int]]] = {}
    spare: dict[str, list[TrackMotion]] = {}  # other cameras' tracks not wanted: judged only as rivals
    own: list[TrackMotion] = []  # the track's camera's other tracks: competitors in a joint association
    for o in others:
        if o.key == track.key:
            continue
        if o.camera_id == track.camera_id:
            own.append(o)
        if o.camera_id != track.camera_id:
            if geometry is None or track.ground is None or o.ground is None:
                continue
            if wanted is not None and o.key not in wanted:
                spare.setdefault(o.camera_id, []).append(o)
                continue
            v = judge(track.ground, o.ground, geometry)
            if v == DISAGREE:
                out[o.key] = DISAGREE
            elif v == AGREE:
                agree.setdefault(o.camera_id, []).append((o, AGREE))
        elif continuity.max_gap_s > 0 and continues(o, track, continuity, geometry):
            agree.setdefault(o.camera_id, []).append((o, CONTINUES))

    def together(a: TrackMotion, b: TrackMotion) -> bool:
        return a.start_ts <= b.last_seen_ts and b.start_ts <= a.last_seen_ts

    partners: dict[frozenset[TrackKey], TrackKey | None] = {}  # one joint association per group of rivals
    for cam, candidates in agree.items():
        for c, verdict in candidates:
            # Successive tracks of one camera (one person the tracker lost and found, not seen at the same time) are
            # not rivals.
            rivals = [o for o, _ in candidates if o is not c and together(o, c)]
            if verdict == AGREE:
                rivals += [o for o in spare.get(cam, ()) if together(o, c)
                           and judge(track.ground, o.ground, geometry) == AGREE]  # type: ignore[arg-type]
            if not rivals:
                out[c.key] = verdict
                continue
            if verdict != AGREE:
                continue  # two continuity candidates: no evidence for either (they share no moment with the track)
            group = sorted([c, *rivals], key=lambda m: m.key)
            keys = frozenset(m.key for m in group)
            if keys not in partners:
                partners[keys] = moment_partner(track, group, own, geometry)  # type: ignore[arg-type]
            if partners[keys] == c.key:
                out[c.key] = verdict  # two people side by side in that view: the one standing where the track is
    return out
