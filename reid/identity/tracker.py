"""The identity tracker: per-camera track sightings and crop embeddings in, identity outcomes out.

This is the whole path from what the per-camera trackers report to what the product announces, as a library:
the match stage only decodes messages into :meth:`IdentityTracker.observe` and publishes the :class:`Outcome`
list of :meth:`IdentityTracker.decide`; a test drives it with plain data and an in-memory or real store.

**Ordering.** Decisions are taken in video-time order behind a *watermark*, the earliest time every still-running
camera has reached; a decision due at time T is taken once every camera has passed T (strictly: a camera that has
reached T can still report more of T in the same message). Every decision reads each track *as of* its decision
time (its path is kept with times), never its latest state, so the outcomes are the same whatever the interleaving
of the cameras' messages or the replay speed. A live camera silent for ``max_lateness_s`` (wall time) stops
holding the others back.

**Maturity.** A track is first matched ``min_age_s`` after it started, once it has an embedded crop; a track that
ends younger without an identity is a fragment (a false detection, a person half-seen at the edge): it founds no
identity and makes no outcome. A placed track is matched again when it ends (with all its crops, so its
identity's prototypes learn from the whole track) and every ``refresh_every_s`` while it runs.

**Deferral.** A first match that is ambiguous (two identities within the matcher's margin) gives no identity yet:
the track is tried again at each of its next reports, jointly with the other tracks due then, until the evidence
settles it or ``ambiguous_wait_s`` has passed.

**Links.** For a track not placed yet, the tracks of other cameras standing at the same ground place (AGREE) or
far away (DISAGREE) at the same time, and the track of the same camera it continues after an occlusion
(:mod:`reid.identity.links`).

**Swaps.** A placed track of a calibrated camera that came out of a crossing on another person, as the other view
shows (:mod:`reid.identity.swaps`), is split at its ground checks: it ends where it left its person, and its later
sightings go on as a new track, a *part*, matched like any other (a SPLIT outcome says so).

**Cost.** Per decision the work is linear in the live tracks: each track's path is a bounded window read by binary
search (:class:`reid.identity.geometry.TimeWindow`), and the spans of placed running tracks reach the matcher in
memory (``Matcher.match(running=...)``) rather than by rewriting their identities' records. Writes happen when
something must survive a restart: a first match, a refresh, an end.

**Bounds on a live stream.** A track not sighted for ``lost_timeout_s + max_lateness_s`` behind the decision time
is ended (its end was lost with a dead stage); a camera whose tracks come from a new id range (a restarted detector
numbers its tracks from ``instance * track_id_stride``) has its older tracks ended; the latest ended tracks are
kept for the continuity and walking-speed links (:data:`RECENT_TRACKS`), and each decision reads only those that
can matter.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from reid.identity.album import Album, Appearance
from reid.identity.config import MatcherConfig
from reid.identity.geometry import (
    AGREE,
    CONTINUES,
    DISAGREE,
    GeometryConfig,
    GroundTrack,
    Homography,
    TimeWindow,
    box_iou,
)
from reid.identity.links import ContinuityConfig, TrackMotion, TwoPeopleLevels, links_for
from reid.identity.matcher import Matcher, MatchResult, TrackSummary
from reid.identity.records import CORRECTED, ENDED, MOVED, NEW, SEEN, SPLIT, TrackRef
from reid.identity.rules import admissible
from reid.identity.store import RUN_STRIDE
from reid.identity.swaps import CROWDED_IOU, Swap, SwapView, find_swap

log = logging.getLogger(__name__)

_GROUND_ONLY = ContinuityConfig(max_gap_s=0)  # the corrections' links: the ground's verdicts, no continuity
RECENT_TRACKS = 256  # ended placed tracks kept for continuity and walking-speed links (the latest ones)
PATH_LENGTH = 600  # sightings kept per track without a geometry section (2 minutes at 5 detections per second)
TRACK_ID_STRIDE = 1_000_000  # a restarted detector numbers its tracks from instance * stride
PART_STRIDE = 1_000_000_000  # the n-th part of a track split at a swap is reported as its id + n * stride

STARTED, ACTIVE, LOST, TRACK_ENDED = "started", "active", "lost", "ended"  # detectors.types.TrackState values


class Sighting(Protocol):
    """One row of a per-camera tracker's report (``pipeline.messages.TrackEntry`` is one): a track's state in one
    frame, and ``row``, the index of its crop's embedding in the message (-1: no crop)."""

    track_id: int
    state: str
    frame_index: int
    ts: float
    xyxy: tuple[float, float, float, float]
    quality: float
    row: int


@dataclass(frozen=True)
class Outcome:
    """What one decision says about one track: ``kind`` is NEW (founded an identity), MOVED (joined one last seen
    in another camera, ``from_camera``), SEEN (joined one last seen in this camera, or a first sighting of a known
    identity) or ENDED (the track ended; ``global_id`` None when it never got one). ``crop_jpeg`` is the track's
    best crop for NEW and MOVED when the tracker keeps crops."""

    kind: str
    camera_id: str
    track_id: int
    global_id: int | None
    ts: float
    frame_index: int
    box: tuple[float, ...] | None
    similarity: float | None = None
    from_camera: str | None = None
    reason: str | None = None
    ground_xy: tuple[float, float] | None = None
    crop_jpeg: bytes | None = None
    duration_s: float | None = None
    num_crops: int | None = None
    last_seen_ts: float | None = None
    from_global_id: int | None = None  # CORRECTED: the identity the track was moved out of
    part_track_id: int | None = None  # SPLIT: the id the track's sightings from ``ts`` on are reported under


@dataclass(frozen=True)
class _Due:
    """A track as it was when a decision about it became due: the decision uses this, not the track's later state,
    so it does not depend on how far the track got before the watermark let the decision through."""

    last_ts: float
    frame_index: int
    box: tuple[float, ...] | None
    num_crops: int
    ended: bool
    last_seen_ts: float
    retry: bool = False  # a deferred track's next try: dropped if the track was placed meanwhile
    refresh: bool = False  # a placed track's periodic write: dropped if the track is not placed by then
    audit: bool = False  # a placed track's periodic check against the ground: no write unless it corrects


@dataclass(eq=False)
class _Track:
    camera_id: str
    track_id: int
    start_ts: float
    path: TimeWindow  # per sighting: x1, y1, x2, y2, ground x, ground y (NaN without one), frame, crowded (0/1)
    ground: GroundTrack | None  # the valid ground positions (calibrated cameras)
    last_ts: float = -math.inf  # latest report of any state
    last_seen_ts: float = -math.inf  # latest sighting (STARTED/ACTIVE)
    frame_index: int = 0
    box: tuple[float, ...] | None = None
    first_box: tuple[float, ...] | None = None
    ts: list[float] = field(default_factory=list)  # per embedded crop (at most the detector's crops per track)
    reported: list[float] = field(default_factory=list)  # per crop: the video time of the report that brought it
    embs: list[np.ndarray] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)  # kept in step with embs when crops are kept
    global_id: int | None = None
    matched_crops: int = 0  # crops in the summary of its latest write
    queued: bool = False  # its first match is due (or done)
    deferred_ts: float | None = None  # when its first match was deferred as ambiguous
    next_refresh_ts: float = math.inf
    next_audit_ts: float = math.inf
    placed_ts: float = math.inf  # decision time of its first identity (the later of two placements is suspect)
    sampled: bool = False  # its first decision measured it against the tracks of its camera seen with it
    reported_id: int = 0  # the id its detector reports (``track_id`` is the run's key: see RUN_STRIDE)
    origin: tuple[str, int] | None = None  # a part of a split track: the key its detector's sightings come under
    cut: bool = False  # split at a swap: its span ends at its last sighting, whatever an earlier write said
    ended: bool = False
    end_ts: float = math.inf  # when its end was queued (once ended)
    final: TrackMotion | None = None  # its motion once ended (what every later decision sees)

    @property
    def key(self) -> tuple[str, int]:
        return (self.camera_id, self.track_id)

    def last_seen(self, as_of: float) -> float | None:
        if as_of >= self.last_seen_ts:  # the common case: a decision after the latest sighting
            return self.last_seen_ts if math.isfinite(self.last_seen_ts) else None
        return self.path.last_ts(as_of)

    def motion(self, as_of: float) -> TrackMotion | None:
        """The track as it was at ``as_of`` (None if not seen yet): what the link rules compare."""
        seen = self.path.until(as_of)
        if not len(seen) or self.first_box is None:
            return None
        ground = self.ground.until(as_of) if self.ground is not None else None
        return TrackMotion(self.camera_id, self.track_id, self.start_ts, float(seen.ts[-1]),
                           np.asarray(self.first_box), seen.values[-1, :4].copy(), ground)

    def ground_xy(self, as_of: float) -> tuple[float, float] | None:
        if self.ground is None:
            return None
        g = self.ground.until(as_of)
        return (round(float(g.xy[-1, 0]), 2), round(float(g.xy[-1, 1]), 2)) if len(g) else None

    def summary(self, num_crops: int) -> TrackSummary:
        return TrackSummary.from_crops(self.camera_id, self.track_id, np.array(self.ts[:num_crops]),
                                       np.stack(self.embs[:num_crops]), np.array(self.quality[:num_crops]),
                                       top_k=None)

    def swap_view(self, as_of: float) -> SwapView:
        """The track as of ``as_of``, as :func:`reid.identity.swaps.find_swap` reads it."""
        seen = self.path.until(as_of)
        assert self.ground is not None
        return SwapView(self.key, self.ground.until(as_of), seen.ts, seen.values[:, 7] > 0)  # type: ignore[arg-type]

    def best_crop(self, num_crops: int) -> int | None:
        """The highest-quality kept crop among the first ``num_crops`` (ties: the earliest)."""
        usable = [i for i in range(min(num_crops, len(self.jpegs))) if self.jpegs[i]]
        return max(usable, key=lambda i: self.quality[i], default=None)


def _crowded(rows: Sequence[Sighting], ts: float) -> list[bool]:
    """Per row, is its box in a crossing: a sighting of this frame (``ts``) whose box overlaps another sighting's of
    the same frame above :data:`reid.identity.swaps.CROWDED_IOU`? Other rows (state changes, older crops) are not."""
    live = [i for i, r in enumerate(rows) if str(r.state) in (STARTED, ACTIVE) and float(r.ts) == ts]
    out = [False] * len(rows)
    if len(live) < 2:
        return out
    b = np.array([rows[i].xyxy for i in live], np.float64)
    iou = box_iou(b, b)
    np.fill_diagonal(iou, 0)
    for i, c in zip(live, iou.max(axis=1) > CROWDED_IOU, strict=True):
        out[i] = bool(c)
    return out


class IdentityTracker:
    """Turns the sightings of every camera's tracks into identity outcomes (see the module docstring).

    ``homographies``: camera id -> its image-to-ground homography (None: uncalibrated); every camera the tracker
    will hear from must be listed. ``album`` (optional) receives each placed track's appearance and best crop;
    ``keep_crops`` keeps each crop's JPEG for the album and for NEW/MOVED outcomes. ``clock`` is the wall clock
    of the live watermark (a test passes its own). ``run``: the pipeline run's number on the store
    (``IdentityStore.begin_run``): its tracks are stored under their own keys (:data:`RUN_STRIDE`), while outcomes
    and albums carry the ids the detector reports.
    """

    def __init__(self, config: MatcherConfig, matcher: Matcher, homographies: Mapping[str, Homography | None],
                 geometry: GeometryConfig | None = None, lost_timeout_s: float = 1.5, album: Album | None = None,
                 keep_crops: bool = False, album_max_age_s: float = 3600.0, album_max_identities: int = 10_000,
                 track_id_stride: int = TRACK_ID_STRIDE, clock: Callable[[], float] = time.monotonic,
                 run: int = 0) -> None:
        if any(h is not None for h in homographies.values()) and geometry is None:
            raise ValueError("calibrated cameras need a geometry config (same_place, different_place, max_speed)")
        self.config = config
        self.matcher = matcher
        self.homographies = dict(homographies)
        self.geometry = geometry
        self.lost_timeout_s = lost_timeout_s
        self.album = album
        self.keep_crops = keep_crops
        self.album_max_age_s = album_max_age_s
        self.album_max_identities = album_max_identities
        self.track_id_stride = track_id_stride
        self.track_key_base = run * RUN_STRIDE
        self.clock = clock
        self.path_length = geometry.history if geometry is not None else PATH_LENGTH
        self.counters: Counter[str] = Counter()
        self.tracks: dict[tuple[str, int], _Track] = {}
        self.recent: deque[_Track] = deque(maxlen=RECENT_TRACKS)  # ended placed tracks, for links
        self.parts: dict[tuple[str, int], tuple[str, int]] = {}  # a split track's key -> its running part's key
        q = config.continuity.appearance_quantile
        self.levels = TwoPeopleLevels(q, config.continuity.min_pairs) if q is not None else None
        self._level_told = False  # the two-people level was logged when it became available
        self._ready: list[tuple[float, str, int, int, _Due]] = []  # heap: (decision ts, camera, track, n, due)
        self._n = 0
        self.progress: dict[str, float] = {}  # camera -> latest video time reported
        self.heard: dict[str, float] = {}  # camera -> wall time of its latest report
        self.ended_cameras: set[str] = set()
        self.id_range: dict[str, int] = {}  # camera -> newest track id range seen
        self.started = clock()  # a live camera never heard from counts as silent since then
        self.live = False
        self._last_prune = -math.inf

    # -- input ------------------------------------------------------------------------------------------------------
    def observe(self, camera_id: str, ts: float, sightings: Iterable[Sighting], embeddings: np.ndarray | None = None,
                jpegs: Sequence[bytes] | None = None, live: bool = False) -> None:
        """One frame's report of a camera at video time ``ts``: the rows, the embeddings their ``row`` points
        into, and (when crops are kept) one JPEG per embedding. Rows must come in video-time order per camera."""
        self._check_camera(camera_id)
        self.live = self.live or live
        self.progress[camera_id] = max(self.progress.get(camera_id, -math.inf), ts)
        self.heard[camera_id] = self.clock()
        embs = np.zeros((0, 0), np.float32) if embeddings is None else embeddings
        rows = list(sightings)
        crowded = _crowded(rows, ts)
        for s, c in zip(rows, crowded, strict=True):
            self._sighting(camera_id, s, embs, jpegs, ts, c)

    def end_camera(self, camera_id: str) -> None:
        """The camera's stream ended: its running tracks end with it, and it no longer holds back decisions."""
        self._check_camera(camera_id)
        self.ended_cameras.add(camera_id)
        if self.levels is not None and self.ended_cameras >= set(self.homographies):
            self._tell_level("at the end of the streams")
        end_ts = self.progress.get(camera_id, -math.inf)
        for t in list(self.tracks.values()):
            if t.camera_id == camera_id and not t.ended:
                self._finish(t, max(end_ts, t.last_ts))

    @property
    def finished(self) -> bool:
        """Every camera ended and every decision taken."""
        return self.ended_cameras >= set(self.homographies) and not self._ready

    def _check_camera(self, camera_id: str) -> None:
        if camera_id not in self.homographies:
            raise KeyError(f"unknown camera {camera_id!r}; the tracker knows {sorted(self.homographies)}")

    def _sighting(self, cam: str, s: Sighting, embs: np.ndarray, jpegs: Sequence[bytes] | None,
                  report_ts: float, crowded: bool = False) -> None:
        reported, ts = int(s.track_id), float(s.ts)
        key = (cam, self.track_key_base + reported)
        self._new_range(cam, reported, ts)
        key = self.parts.get(key, key)  # a track split at a swap goes on as its latest part
        t = self.tracks.get(key)
        if t is None:
            h = self.homographies[cam]
            t = self.tracks[key] = _Track(cam, key[1], ts, TimeWindow(self.path_length, 8),
                                          GroundTrack(self.path_length) if h is not None else None,
                                          reported_id=reported)
        t.last_ts = max(t.last_ts, ts)
        t.frame_index = int(s.frame_index)
        t.box = tuple(float(v) for v in s.xyxy)
        state = str(s.state)
        if state in (STARTED, ACTIVE):
            # A track's last crop can come with its ENDED row, dated when it was taken: its path and last sighting
            # keep only what is newer (TimeWindow ignores older samples), so a lost track's end is when it was last
            # seen, not when the detector gave it up - else its successor, started meanwhile, would seem to be
            # seen at the same time in the same camera and could never continue its identity.
            self._add_path(t, ts, t.box, t.frame_index, crowded)
        k = int(s.row)
        if ts < t.start_ts:  # a crop taken before the track was split (its final one): not this part's person
            self.counters["crops_before_split"] += k >= 0
            k = -1
        if 0 <= k < len(embs) and np.isfinite(embs[k]).all() and np.linalg.norm(embs[k]) > 0:
            t.ts.append(ts)
            t.reported.append(max(report_ts, ts))
            t.embs.append(np.asarray(embs[k], np.float32))
            t.quality.append(float(s.quality))
            if self.keep_crops:
                t.jpegs.append(jpegs[k] if jpegs is not None and k < len(jpegs) else b"")
        if state == TRACK_ENDED:
            self._finish(t, ts)
        else:
            self._schedule(t, ts, bool(t.embs), t.last_ts)

    def _schedule(self, t: _Track, ts: float, has_crops: bool, last_ts: float, held: bool = False) -> None:
        """What a sighting of ``t`` at ``ts`` makes due: its first match, a retry, a refresh, a ground check.
        ``held``: a part's sighting that came before the part was cut (:meth:`_split`), scheduled now as it would
        have been had it come after (its decisions read the part as of ``ts``)."""
        if not t.queued and has_crops and last_ts - t.start_ts >= self.config.min_age_s:
            t.queued = True
            # Refreshes fall on a grid fixed now, from the sightings alone: had it started at the placement, a
            # camera running ahead of the others would have put them wherever its next message happened to be.
            t.next_refresh_ts = ts + self.config.refresh_every_s
            t.next_audit_ts = ts + self.config.audit_every_s if self._audits(t) else math.inf
            self._enqueue(ts, t, held=held)
        elif t.global_id is None and t.queued and self.config.ambiguous_wait_s > 0:
            # Queued but not placed: a try at its sightings, so that if the first match is deferred, the next try
            # falls at video times that do not depend on when the deferral happened (message timing).
            self._enqueue(ts, t, retry=True, held=held)
        if t.queued and ts >= t.next_refresh_ts:
            while ts >= t.next_refresh_ts:
                t.next_refresh_ts += self.config.refresh_every_s
            self._enqueue(ts, t, refresh=True, held=held)
        if t.queued and ts >= t.next_audit_ts:
            while ts >= t.next_audit_ts:
                t.next_audit_ts += self.config.audit_every_s
            self._enqueue(ts, t, audit=True, held=held)

    def _audits(self, t: _Track) -> bool:
        """Are ``t``'s identity decisions checked against the ground (a calibrated camera among others)?"""
        return self.config.audit_every_s > 0 and self.geometry is not None and t.ground is not None \
            and sum(h is not None for h in self.homographies.values()) >= 2

    def _new_range(self, cam: str, track_id: int, ts: float) -> None:
        """A track id from a newer range than the camera's: its detector restarted, and the tracks of the old range
        will never be reported again. They end now."""
        r = track_id // self.track_id_stride
        if r <= self.id_range.get(cam, r):
            self.id_range.setdefault(cam, r)
            return
        self.id_range[cam] = r
        old = [t for t in self.tracks.values() if t.camera_id == cam and not t.ended
               and t.reported_id % PART_STRIDE // self.track_id_stride < r]
        for t in old:
            self._finish(t, t.last_ts)
        self.counters["tracks_ended_by_restart"] += len(old)
        if old:
            log.warning("camera %s: tracks now come from id range %d; %d tracks of the older range ended", cam, r,
                        len(old))

    def _add_path(self, t: _Track, ts: float, box: tuple[float, ...], frame_index: int, crowded: bool) -> None:
        if t.first_box is None:
            t.first_box = box
        t.last_seen_ts = max(t.last_seen_ts, ts)
        gx = gy = math.nan
        h = self.homographies[t.camera_id]
        if h is not None:
            g = h.project_point((box[0] + box[2]) / 2, box[3])  # the feet: the box's bottom centre
            if g is not None:
                gx, gy = g
                t.ground.add(ts, g)  # type: ignore[union-attr]
            else:  # a box whose feet are above the horizon: a false detection or a bad calibration
                self.counters["ground_skipped"] += 1
        t.path.add(ts, (*box, gx, gy, frame_index, float(crowded)))

    def _finish(self, t: _Track, ts: float) -> None:
        t.ended, t.end_ts = True, ts
        self._enqueue(ts, t)

    def _enqueue(self, ts: float, t: _Track, retry: bool = False, refresh: bool = False, audit: bool = False,
                 held: bool = False) -> None:
        self._n += 1
        if held:  # the track as of ts, not as of its latest report
            seen = t.path.until(ts)
            row, last = seen.values[-1], float(seen.ts[-1])
            due = _Due(last, int(row[6]), tuple(float(v) for v in row[:4]), self._num_crops(t, ts), False, last,
                       retry, refresh, audit)
        else:
            due = _Due(t.last_ts, t.frame_index, t.box, len(t.embs), t.ended,
                       t.last_seen_ts if math.isfinite(t.last_seen_ts) else t.last_ts, retry, refresh, audit)
        heapq.heappush(self._ready, (ts, t.camera_id, t.track_id, self._n, due))

    # -- decisions --------------------------------------------------------------------------------------------------
    def watermark(self) -> float:
        """The video time before which every decision can be taken: the earliest progress of the running cameras
        (live: of those heard from within ``max_lateness_s``); infinite when every camera has ended."""
        active = [c for c in self.homographies if c not in self.ended_cameras]
        if self.live:
            now = self.clock()
            active = [c for c in active if now - self.heard.get(c, self.started) < self.config.max_lateness_s]
        if not active:
            return math.inf
        return min(self.progress.get(c, -math.inf) for c in active)

    def decide(self) -> list[Outcome]:
        """Take every decision due before the watermark, one decision time at a time: a batch then depends only on
        video time, never on message timing. Returns the outcomes in decision order."""
        mark = self.watermark()
        out: list[Outcome] = []
        self._end_stale(mark)
        while self._ready and self._ready[0][0] < mark:
            ts0 = self._ready[0][0]
            due: dict[tuple[str, int], _Due] = {}
            audits: set[tuple[str, int]] = set()
            while self._ready and self._ready[0][0] == ts0:
                _, cam, tid, _, d = heapq.heappop(self._ready)
                t = self.tracks.get((cam, tid))
                if t is None or (d.retry and (t.global_id is not None or t.deferred_ts is None)) or (
                        (d.refresh or d.audit) and t.global_id is None):
                    continue
                if d.audit:
                    audits.add((cam, tid))
                else:
                    due[(cam, tid)] = d
            if due or audits:
                out += self._decide_at(ts0, [(self.tracks[k], d) for k, d in sorted(due.items())],
                                       [self.tracks[k] for k in sorted(audits)])
        return out

    def _end_stale(self, mark: float) -> None:
        """End the tracks not sighted for the tracker's lost timeout plus ``max_lateness_s`` behind the watermark:
        their end was lost (a dead stage), and a live stream must not keep them forever."""
        if not math.isfinite(mark):
            return
        limit = mark - (self.lost_timeout_s + self.config.max_lateness_s)
        for t in list(self.tracks.values()):
            if not t.ended and max(t.last_seen_ts, t.start_ts) < limit:
                self.counters["stale_tracks_ended"] += 1
                self._finish(t, max(t.last_ts, t.start_ts))

    def _decide_at(self, as_of: float, batch: list[tuple[_Track, _Due]],
                   audits: Sequence[_Track] = ()) -> list[Outcome]:
        # A track that ended younger than min_age_s without an identity is a fragment: no identity, no outcome.
        short = {t.key for t, d in batch if d.ended and t.global_id is None
                 and d.last_seen_ts - t.start_ts < self.config.min_age_s}
        self.counters["short_tracks"] += len(short)
        for key in short:
            self._forget(self.tracks[key])
        batch = [(t, d) for t, d in batch if t.key not in short]
        with_embs = [(t, d) for t, d in batch if d.num_crops]
        bases = [t.summary(d.num_crops) for t, d in with_embs]
        new = [(t, s) for (t, _), s in zip(with_embs, bases, strict=True) if t.global_id is None]
        others, wanted = self._evidence(as_of, batch, new) if new else ([], set())
        self._measure_two_people(new, as_of)
        floor = self._continues_floor() if new else None
        summaries = []
        for (t, d), s in zip(with_embs, bases, strict=True):
            summaries.append(TrackSummary(
                t.camera_id, t.track_id, t.start_ts, max(d.last_seen_ts, t.start_ts), s.emb, s.num_crops, s.quality,
                links=self._links(t, as_of, others, wanted) if t.global_id is None else {},
                provisional=self._provisional(t, d, as_of),
                continues_floor=floor if t.global_id is None else None, cut=t.cut and d.ended))
        t0 = time.perf_counter()
        results = self.matcher.match(summaries, self._running(as_of, {t.key for t, _ in batch})
                                     if new else None) if summaries else []
        self.counters["match_ms_total"] += int(1e3 * (time.perf_counter() - t0))
        self.counters["decisions"] += 1
        out: list[Outcome] = []
        for (t, d), r in zip(with_embs, results, strict=True):
            out += self._placed(t, d, r, as_of)
        # Checked against the ground: the tracks whose check is due, and every placed track at its end.
        ending = {t.key for t, d in batch if d.ended}
        for t in sorted({*audits, *(t for t, d in batch if d.ended and t.global_id is not None and self._audits(t))},
                        key=lambda t: t.key):
            out += self._audit(t, as_of, at_end=t.key in ending)
        self._update_albums(batch, as_of)
        for t, d in batch:
            if d.ended:
                out.append(Outcome(ENDED, t.camera_id, t.reported_id, t.global_id, d.last_ts, d.frame_index, d.box,
                                   ground_xy=t.ground_xy(d.last_ts), duration_s=round(d.last_ts - t.start_ts, 3),
                                   num_crops=d.num_crops, last_seen_ts=round(d.last_seen_ts, 4)))
                self._forget(t)
                if t.global_id is not None:
                    t.embs, t.jpegs = [], []  # only its path is needed from now on
                    t.final = t.motion(math.inf)  # later decisions are all after its end
                    self.recent.append(t)
        return out

    def _placed(self, t: _Track, d: _Due, r: MatchResult, as_of: float) -> list[Outcome]:
        if r.global_id is None:  # ambiguous: no identity yet, tried again at its next sightings
            self.counters["deferred_tracks" if t.deferred_ts is None else "deferred_retries"] += 1
            t.deferred_ts = as_of if t.deferred_ts is None else t.deferred_ts
            return []
        first = t.global_id is None
        t.global_id = r.global_id
        t.placed_ts = min(t.placed_ts, as_of)
        t.matched_crops = d.num_crops
        if not first:
            self.counters["refreshed_tracks"] += not d.ended
            return []
        self.counters["matched_tracks"] += 1
        kind, from_cam = self._kind(r, as_of)
        crop = None
        if self.keep_crops and kind in (NEW, MOVED):
            best = t.best_crop(d.num_crops)
            crop = t.jpegs[best] if best is not None else None
        return [Outcome(kind, t.camera_id, t.reported_id, t.global_id, d.last_ts, d.frame_index, d.box, r.similarity,
                        from_cam, r.reason, t.ground_xy(d.last_ts), crop)]

    def _audit(self, t: _Track, as_of: float, at_end: bool = False) -> list[Outcome]:
        """Correct ``t``'s identity when the ground now proves it wrong. Everything is read as of ``as_of`` (paths,
        and the crops reported by then), so a replay gives the same corrections at any speed.

        - ``t`` stands at one place, at the same time, with a track P of one other identity A and with none of its
          own identity B (an AGREE of :func:`reid.identity.links.links_for`, where every running track, placed or
          not, is a rival that the per-moment joint association must rule out): the two are one person, so one of
          them moves. P joins B when A holds fewer tracks than B and P still runs and may join B; otherwise ``t``
          joins A.
        - ``t`` stands far from a track of its own identity seen at the same time (DISAGREE) and was placed after
          it: it leaves, for the identity it stands with if it may join that one, else a new identity.

        A move needs what a first match needs: the target's appearance at least ``link_min_similarity``, its history
        admitting the track, and no DISAGREE with any of its tracks.
        """
        if t.global_id is None or not self._num_crops(t, as_of):
            return []
        owner = self._owners()
        if not at_end and (swap := self._find_swap(t, as_of, owner)) is not None:
            return self._split(t, swap, as_of)
        links = self._ground_links(t, as_of)
        if links is None:
            return []
        agree = {owner[k]: k for k, v in links.items() if v == AGREE and k in owner}
        if t.global_id in agree:
            return []
        me = t.motion(as_of)
        assert me is not None
        placed = {o.key: o.placed_ts for o in (*self.tracks.values(), *self.recent)}
        apart = [k for k, v in links.items() if v == DISAGREE and owner.get(k) == t.global_id
                 and self._together(me, k, as_of) and placed.get(k, math.inf) <= t.placed_ts]
        if apart:
            target = next(iter(agree)) if len(agree) == 1 else None
            if target is not None and not self._may_join(t, target, links, owner, as_of):
                target = None
            return self._move(t, target, "corrected:apart", as_of)
        if len(agree) == 1:
            (target, partner_key), = agree.items()
            partner = self.tracks.get(partner_key)
            if partner is not None and self._num_crops(partner, as_of) \
                    and self._size(target) < self._size(t.global_id):
                partner_links = self._ground_links(partner, as_of)
                if partner_links is not None and self._may_join(partner, t.global_id, partner_links, owner, as_of):
                    return self._move(partner, t.global_id, "corrected:same_place", as_of)
            if self._may_join(t, target, links, owner, as_of):
                return self._move(t, target, "corrected:same_place", as_of)
        return []

    def _find_swap(self, t: _Track, as_of: float, owner: Mapping[tuple[str, int], int]) -> Swap | None:
        """Did ``t`` swap people at a crossing (:mod:`reid.identity.swaps`)? Checked against each track of its
        identity in another calibrated camera seen lately, with that camera's tracks of other identities (or none
        yet) as those it may stand with now. ``owner``: every placed track's identity."""
        assert self.geometry is not None
        recent = self.config.audit_every_s
        seen = [o for o in (*self.tracks.values(), *self.recent)
                if o.ground is not None and o.camera_id != t.camera_id and o.start_ts <= as_of
                and o.last_seen_ts >= t.start_ts]  # another calibrated view's tracks seen with it at some time
        partners = sorted((o for o in seen if owner.get(o.key) == t.global_id
                           and (last := o.last_seen(as_of)) is not None and last >= as_of - 2 * recent),
                          key=lambda o: o.key)  # its identity's, seen since the last check
        if not partners:
            return None
        me = t.swap_view(as_of)
        for p in partners:
            others = [o.swap_view(as_of) for o in seen if o.camera_id == p.camera_id
                      and owner.get(o.key) != t.global_id]
            swap = find_swap(me, p.swap_view(as_of), others, self.geometry)
            if swap is not None:
                return swap
        return None

    def _split(self, t: _Track, swap: Swap, as_of: float) -> list[Outcome]:
        """End ``t`` at its last sighting before ``swap.cut_ts``; its sightings and crops from then on go on as a
        new track, a *part*, reported as ``t``'s id plus ``PART_STRIDE`` (the detector's later sightings of ``t``
        follow it). The part is matched like any new track, as of now (the ground links it with the track it
        stands with); ``t`` ends with its identity, its record's span trimmed to its own sightings."""
        cut = swap.cut_ts
        ts, values = (np.array(a) for a in t.path.arrays())
        latest = t.last_ts, t.box, t.frame_index  # its latest report (of any state): after the cut, the part's
        keep = ts < cut
        n = int(keep.sum())
        own = [c < cut and r <= as_of for c, r in zip(t.ts, t.reported, strict=True)]
        if n == 0 or n == len(ts) or not any(own):  # no crop of its own before the cut: nothing to keep it by
            return []
        origin = t.origin or t.key
        reported = t.reported_id + PART_STRIDE
        part = _Track(t.camera_id, self.track_key_base + reported, float(ts[n]), TimeWindow(self.path_length, 8),
                      GroundTrack(self.path_length), reported_id=reported, origin=origin)
        t.path, t.ground = TimeWindow(self.path_length, 8), GroundTrack(self.path_length)
        for dst, rows in ((t, range(n)), (part, range(n, len(ts)))):
            for k in rows:
                dst.path.add(float(ts[k]), values[k])
                if np.isfinite(values[k, 4]):
                    dst.ground.add(float(ts[k]), values[k, 4:6])  # type: ignore[union-attr]
            last = values[rows[-1]]
            dst.first_box = tuple(float(v) for v in values[rows[0], :4])
            dst.last_seen_ts = dst.last_ts = float(ts[rows[-1]])
            dst.box, dst.frame_index = tuple(float(v) for v in last[:4]), int(last[6])
        part.last_ts, part.box, part.frame_index = latest
        # Crops from the cut on are the part's; one dated before it but reported after now (the detector's final
        # crop, sent with the track's end) is dropped, as it is when it comes after the split (_sighting).
        later = [c >= cut for c in t.ts]
        for name in ("ts", "reported", "embs", "quality", "jpegs"):
            items = getattr(t, name)
            setattr(part, name, [x for x, m in zip(items, later, strict=False) if m])
            setattr(t, name, [x for x, m in zip(items, own, strict=False) if m])
        t.cut = True
        self.tracks[part.key] = part
        self.parts[origin] = part.key
        self.counters["split_tracks"] += 1
        log.info("%s/%s swapped people at a crossing: it left %s/%s for %s/%s; from %.2f s on it is %s/%s",
                 t.camera_id, t.reported_id, *self._reported(swap.partner), *self._reported(swap.joined), cut,
                 t.camera_id, part.reported_id)
        end_ts = t.end_ts if t.ended else None  # its end already came: it is the part's
        self._finish(t, t.last_seen_ts)  # t's earlier end entry finds it gone
        if self.album is not None:  # its thumbnail may be the other person's: recorded again at its end
            self.album.forget(t.global_id, t.camera_id, t.reported_id)  # type: ignore[arg-type]
        self._queue_part(part, as_of)
        if end_ts is not None:
            self._finish(part, end_ts)
        first = part.path.values[0]
        return [Outcome(SPLIT, t.camera_id, t.reported_id, t.global_id, float(part.path.ts[0]), int(first[6]),
                        tuple(float(v) for v in first[:4]), reason="split:swap", ground_xy=part.ground_xy(cut),
                        part_track_id=part.reported_id)]

    def _queue_part(self, part: _Track, as_of: float) -> None:
        """Schedule a new part's sightings from ``as_of`` on as :meth:`_sighting` would have. The part may already
        hold sightings past ``as_of`` (how far its camera got is message timing): they are scheduled now, each as
        of its own time, so a replay queues the same decisions at any speed."""
        for ts in part.path.ts[int(np.searchsorted(part.path.ts, as_of)):].tolist():
            self._schedule(part, ts, self._num_crops(part, ts) > 0, ts, held=True)

    def _forget(self, t: _Track) -> None:
        """Drop an ended track, and the route of its detector's sightings to it if it is a part."""
        del self.tracks[t.key]
        if t.origin is not None and self.parts.get(t.origin) == t.key:
            del self.parts[t.origin]

    def _reported(self, key: tuple[str, int]) -> tuple[str, int]:
        """A track key as its camera and the id outcomes carry."""
        o = self.tracks.get(key) or next((r for r in self.recent if r.key == key), None)
        return key[0], o.reported_id if o is not None else key[1] - self.track_key_base

    @staticmethod
    def _num_crops(t: _Track, as_of: float) -> int:
        """The crops of ``t`` reported by ``as_of`` (reports come in video-time order per camera)."""
        return bisect.bisect_right(t.reported, as_of)

    def _ground_links(self, t: _Track, as_of: float) -> dict[tuple[str, int], int] | None:
        """``t``'s ground verdicts against the other calibrated cameras' tracks, as of ``as_of``: every running
        track (an unplaced one can be the rival that makes an AGREE ambiguous) and the recently ended placed ones."""
        me = t.motion(as_of)
        if me is None:
            return None
        others = [m for k, o in self.tracks.items() if o.ground is not None and k != t.key
                  and (m := o.motion(as_of)) is not None]
        others += [o.final for o in self.recent if o.final is not None and o.final.last_seen_ts >= me.start_ts
                   and o.key != t.key]
        return links_for(me, others, _GROUND_ONLY, self.geometry)

    def _owners(self) -> dict[tuple[str, int], int]:
        owner = {k: o.global_id for k, o in self.tracks.items() if o.global_id is not None}
        owner.update({o.key: o.global_id for o in self.recent if o.global_id is not None})
        return owner

    def _together(self, me: TrackMotion, key: tuple[str, int], as_of: float) -> bool:
        o = self.tracks.get(key)
        m = o.motion(as_of) if o is not None else next((r.final for r in self.recent if r.key == key), None)
        return m is not None and me.start_ts <= m.last_seen_ts and m.start_ts <= me.last_seen_ts

    def _size(self, gid: int) -> int:
        ident = self.matcher.get(gid)
        return ident.num_tracks if ident is not None else 0

    def _move(self, t: _Track, target: int | None, reason: str, as_of: float) -> list[Outcome]:
        """Move ``t`` to identity ``target`` (None: a new one) through the matcher; its album entry follows."""
        num = self._num_crops(t, as_of)
        summary = t.summary(num)
        sim = self.matcher.gallery.similarity(target, summary.emb) if target is not None else None
        moved = self.matcher.move(summary, target)
        if moved is None:
            return []
        ident, old = moved
        t.global_id = ident.global_id
        t.placed_ts = as_of  # placed anew: the apart rule compares placements
        self.counters["corrected_tracks"] += 1
        log.info("%s/%s moved from identity %s to %s (%s)", t.camera_id, t.reported_id, old, ident.global_id, reason)
        seen = t.path.until(as_of)
        last_ts, box, frame = float(seen.ts[-1]), tuple(float(v) for v in seen.values[-1, :4]), int(seen.values[-1, 6])
        if self.album is not None:
            self.album.forget(old, t.camera_id, t.reported_id)
            best = t.best_crop(num) if self.keep_crops else None
            jpeg, quality = (t.jpegs[best], t.quality[best]) if best is not None else (b"", 0.0)
            self.album.record(t.global_id, Appearance(t.camera_id, t.reported_id, t.start_ts, max(last_ts, t.start_ts),
                                                      t.ground_xy(as_of)), jpeg, quality)
        return [Outcome(CORRECTED, t.camera_id, t.reported_id, ident.global_id, last_ts, frame, box,
                        None if sim is None else round(float(sim), 4), None, reason, t.ground_xy(as_of),
                        from_global_id=old)]

    def _may_join(self, t: _Track, gid: int, links: Mapping[tuple[str, int], int],
                  owner: Mapping[tuple[str, int], int], as_of: float) -> bool:
        """Would a first match let ``t`` join identity ``gid``: appearance, co-occurrence, no ground veto."""
        emb = t.summary(self._num_crops(t, as_of)).emb
        if gid not in self.matcher.gallery or \
                self.matcher.gallery.similarity(gid, emb) < self.config.link_min_similarity:
            return False
        ident = self.matcher.get(gid)
        history = {r.key: r for r in (ident.tracks if ident else [])}
        for r in self._running(as_of, {t.key}).get(gid, []):
            history[r.key] = r
        if any(v == DISAGREE and owner.get(k) == gid for k, v in links.items()):
            return False
        ref = TrackRef(t.camera_id, t.track_id, t.start_ts, max(t.last_seen(as_of) or t.start_ts, t.start_ts))
        return admissible(ref, list(history.values()), self.config.topology)

    def _kind(self, result: MatchResult, as_of: float) -> tuple[str, str | None]:
        if result.is_new:
            return NEW, None
        ident = self.matcher.get(result.global_id)  # type: ignore[arg-type]
        # The identity's other tracks with the spans of those still running as of now (their records hold the
        # span of their last write): the latest sighting decides between MOVED and SEEN.
        me = (result.camera_id, result.track_id)
        spans = {r.key: r for r in (ident.tracks if ident else []) if r.key != me}
        for r in self._running(as_of, {me}).get(result.global_id, []):  # type: ignore[arg-type]
            if r.key not in spans or r.end_ts > spans[r.key].end_ts:
                spans[r.key] = r
        earlier = list(spans.values())
        # Ties (tracks still running are all seen "until now") are broken by start, then camera and track, so the
        # outcome does not depend on the order in which the identity's record lists its tracks.
        latest = max(earlier, key=lambda r: (r.end_ts, r.start_ts, r.camera_id, r.track_id), default=None)
        if latest is not None and latest.camera_id != result.camera_id:
            return MOVED, latest.camera_id
        return SEEN, None

    def _measure_two_people(self, new: list[tuple[_Track, TrackSummary]], as_of: float) -> None:
        """At a track's first decision, its cosine to every track of its camera seen with it and decided before
        it (each pair once) goes to the site's two-people level: two tracks of one camera at the same time are
        two people. Fragments that never reach a decision (false detections, half-seen people) are left out."""
        if self.levels is None:
            return
        embs: dict[tuple[str, int], np.ndarray] = {}  # each other track's summary as of now, computed once
        for t, s in new:
            if t.sampled:
                continue
            t.sampled = True
            for o in self.tracks.values():
                if o is t or o.camera_id != t.camera_id or not o.sampled or o.start_ts > as_of:
                    continue
                last, n = o.last_seen(as_of), self._num_crops(o, as_of)
                if last is not None and last >= t.start_ts and n:
                    if o.key not in embs:
                        embs[o.key] = o.summary(n).emb
                    self.levels.add(t.camera_id, float(s.emb @ embs[o.key]))

    def _continues_floor(self) -> float | None:
        """The appearance a continuity link needs: the site's two-people level, or the matcher's threshold while
        the cameras have not shown enough pairs; None without the rule."""
        if self.levels is None:
            return None
        level = self.levels.level()
        if level is not None and not self._level_told:
            self._level_told = True
            self._tell_level("now")
        return self.config.threshold if level is None else level

    def _tell_level(self, when: str) -> None:
        assert self.levels is not None
        level, pairs = self.levels.level(), self.levels.counts()
        if level is not None:
            log.info("two people seen together in one camera score %.3f at the %.0fth percentile (%s pairs, %s); "
                     "a continuity link needs more", level, 100 * self.levels.quantile,
                     ", ".join(f"{c} {n}" for c, n in sorted(pairs.items())), when)

    def _provisional(self, t: _Track, d: _Due, as_of: float) -> bool:
        """May this decision be deferred if ambiguous: a running, unplaced track within its wait."""
        wait = self.config.ambiguous_wait_s
        return (not d.ended and t.global_id is None and wait > 0
                and (t.deferred_ts is None or as_of - t.deferred_ts < wait))

    def _running(self, as_of: float, exclude: set[tuple[str, int]]) -> dict[int, list[TrackRef]]:
        """By identity, the spans as of ``as_of`` of the placed tracks still running: without them, a second person
        appearing later in the same camera could join the identity of a person still standing there."""
        out: dict[int, list[TrackRef]] = {}
        for key, t in self.tracks.items():
            if key in exclude or t.global_id is None:
                continue
            last = t.last_seen(as_of)
            if last is not None:
                out.setdefault(t.global_id, []).append(
                    TrackRef(t.camera_id, t.track_id, t.start_ts, max(last, t.start_ts), t.matched_crops))
        return out

    def _evidence(self, as_of: float, batch: list[tuple[_Track, _Due]],
                  new: list[tuple[_Track, TrackSummary]]) -> tuple[list[TrackMotion], set[tuple[str, int]]]:
        """The tracks to link the batch's unplaced tracks with, as of ``as_of``, and those whose verdicts are wanted.

        The matcher uses a link only through an identity the track could join - one within
        ``min(link_min_similarity, threshold - margin)`` cosine of it, below which no link or rival counts - or
        with a track decided in the same batch: the verdicts on those tracks are wanted. Every running track
        stays in as a possible rival of an AGREE (and for continuity), as do the ended tracks last seen no
        earlier than ``continuity.max_gap_s`` (or the geometry's ``max_dt_s``) before an unplaced track started
        (the only ones that can continue it, or be seen with it); other ended tracks of other identities cannot
        change the decision and are left out. So a decision costs the live tracks, not the site's history.
        """
        c = self.config
        # Only identities of running or recently ended tracks can have a wanted track: score those, not the gallery.
        gallery, floor = self.matcher.gallery, min(c.link_min_similarity, c.threshold - c.margin)
        embs = np.stack([s.emb for _, s in new])
        local = ({t.global_id for t in self.tracks.values()} | {t.global_id for t in self.recent}) - {None}
        gids = gallery.within(local, embs, floor)
        reach = max(c.continuity.max_gap_s, self.geometry.max_dt_s if self.geometry is not None else 0.0)
        since = min(t.start_ts for t, _ in new) - reach
        wanted = {t.key for t, _ in batch} | {k for k, t in self.tracks.items() if t.global_id in gids}
        recent = [t for t in self.recent if t.global_id in gids or t.last_seen_ts >= since]
        wanted |= {t.key for t in recent if t.global_id in gids}
        others = [m for t in self.tracks.values() if (m := t.motion(as_of)) is not None]
        return others + [t.final for t in recent if t.final is not None], wanted

    def _links(self, t: _Track, as_of: float, others: list[TrackMotion],
               wanted: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        me = t.motion(as_of)
        if me is None:
            return {}
        found = links_for(me, others, self.config.continuity, self.geometry, wanted)
        for v in found.values():
            self.counters[{AGREE: "links_agree", CONTINUES: "links_continue"}.get(v, "links_disagree")] += 1
        return found

    def _update_albums(self, batch: list[tuple[_Track, _Due]], as_of: float) -> None:
        """Each placed track's appearance and best crop go to its identity's album; albums past their retention
        are pruned now and then (track time, as the matcher's expiry)."""
        if self.album is None:
            return
        for t, d in batch:
            if t.global_id is None:
                continue
            app = Appearance(t.camera_id, t.reported_id, t.start_ts, max(d.last_seen_ts, t.start_ts),
                             t.ground_xy(d.last_ts))
            best = t.best_crop(d.num_crops) if self.keep_crops else None
            jpeg, quality = (t.jpegs[best], t.quality[best]) if best is not None else (b"", 0.0)
            self.album.record(t.global_id, app, jpeg, quality)
            self.counters["album_writes"] += 1
        if as_of - self._last_prune >= self.config.expire_every_s:
            self._last_prune = as_of
            pruned = self.album.prune(as_of - self.album_max_age_s, self.album_max_identities)
            self.counters["albums_pruned"] += len(pruned)

    # -- state ------------------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """Counters of the tracker, the matcher and the store, for the stage's reports."""
        m = self.matcher.stats
        store = self.matcher.store
        return {
            "open_tracks": len(self.tracks), "queued_decisions": len(self._ready), "recent_tracks": len(self.recent),
            "identities": len(self.matcher.gallery), "counters": dict(self.counters),
            "two_people_level": round(v, 3) if self.levels is not None and (v := self.levels.level()) is not None
            else None,
            "two_people_pairs": self.levels.counts() if self.levels is not None else {},
            "matcher": {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(m).items()},
            "store": {"corrupt_records": store.corrupt_records,
                      "write_conflicts": store.write_conflicts},
        }
