"""Match stage: per-track embeddings into global identities (reid.identity on Redis), events out.

Tracks are matched in video-time order behind a watermark (the earliest time every still-running camera has
reached), so a replay gives the same identities whatever the interleaving of the cameras' messages; a live
camera that falls silent stops holding the others back after ``match.max_lateness_s``. A track is matched
once it is mature (enough crops or tracked long enough) and again when it ends, with all its crops, so its
identity's prototypes learn from the whole track. A first match that is ambiguous is deferred: the track is tried
again at each sighting until the evidence settles it or ``match.ambiguous_wait_s`` has passed.

Besides embeddings, the stage keeps each track's recent path (boxes, and ground positions for calibrated
cameras) and gives the matcher *links* for a track it has not placed yet (:mod:`reid.identity.links`): the
tracks of other cameras standing at the same place (AGREE) or far away (DISAGREE) at the same time, and the
track of the same camera it continues after an occlusion. Links are computed from every track's state as of the
decision time, so they too are independent of message timing.
"""

from __future__ import annotations

import base64
import heapq
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import zmq

from detectors.types import TrackState
from pipeline.events import ENDED, MOVED, NEW, SEEN, encode_event, make_event
from pipeline.messages import EmbeddingsMsg, EndMsg, Msg, TrackEntry
from pipeline.stage import Stage, bind_dir
from reid.identity.album import Appearance
from reid.identity.geometry import AGREE, CONTINUES, GroundTrack, Homography, foot_points
from reid.identity.links import TrackMotion, links_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A track as it was when it became ready: decisions and events use this, not the track's later state,
    so they do not depend on how far the track got before the watermark let the decision through."""

    last_ts: float
    frame_index: int
    box: list[float] | None
    num_crops: int
    ended: bool
    last_seen_ts: float
    retry: bool = False  # taken after the track was queued for its first match: used only if that was deferred


@dataclass
class TrackBuffer:
    camera_id: str
    track_id: int
    start_ts: float
    last_ts: float
    frame_index: int = 0
    box: list[float] | None = None
    ts: list[float] = field(default_factory=list)
    embs: list[np.ndarray] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)  # with crops kept (events or gallery): one per crop in embs
    global_id: int | None = None
    matched_crops: int = 0  # crops in the summary of its latest match
    lost_ts: float | None = None  # when the tracker lost it (None while it is seen)
    queued: bool = False
    deferred_ts: float | None = None  # when its first match was deferred as ambiguous (None: not deferred)
    ended: bool = False
    first_box: tuple[float, float, float, float] | None = None
    # Where it was seen: (ts, x1, y1, x2, y2, ground x, ground y; NaN without a ground position), recent only.
    path: deque[tuple[float, ...]] = field(default_factory=lambda: deque(maxlen=PATH_LENGTH))


PATH_LENGTH = 600  # sightings kept per track for links (2 minutes at 5 detections per second)
RECENT_TRACKS = 256  # ended tracks kept for continuity and walking-speed links


class MatchStage(Stage):
    name = "match"
    input = "match"

    def setup(self) -> None:
        from reid.identity.album import Album
        from reid.identity.matcher import Matcher
        from reid.identity.store import IdentityStore

        m = self.config.matcher
        url = self.options.get("redis_url") or m.redis.url
        self.store = IdentityStore.from_config(m.redis, url, dim=m.embedding_dim, max_prototypes=m.max_prototypes)
        self.matcher = Matcher(m, self.store)
        g = self.config.gallery
        self.album = Album.from_config(self.store, g)
        self.keep_jpegs = self.config.events_include_crops or g.store_crops
        self._last_prune = -math.inf
        self.seq_key = self.store.key("events", "seq")
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 1000)
        self.pub.setsockopt(zmq.SNDHWM, 10000)
        endpoint = self.config.endpoint("events")
        bind_dir(endpoint)
        self.guard.bind(self.pub, endpoint, always=True)
        self.tracks: dict[tuple[str, int], TrackBuffer] = {}
        self.ready: list[tuple[float, str, int, int, Snapshot]] = []  # heap: (decision ts, camera, track, n, state)
        self.progress: dict[str, float] = {}  # camera -> latest video time seen
        self.heard: dict[str, float] = {}  # camera -> wall time of its latest message
        self.started = time.monotonic()  # a live camera never heard from counts as silent since then
        self.live = False
        self._n = 0
        self.grounds: dict[str, Homography | None] = {c.id: c.ground() for c in self.config.cameras}
        self.recent: deque[TrackBuffer] = deque(maxlen=RECENT_TRACKS)  # ended tracks, for links

    def teardown(self) -> None:
        if hasattr(self, "pub"):
            self.pub.close()
        if hasattr(self, "store"):
            self.store.close()

    # -- input ----------------------------------------------------------------------------------------------
    def handle(self, msg: Msg) -> None:
        cam = msg.camera_id
        if cam not in {c.id for c in self.config.cameras}:
            self.counters["unknown_camera"] += 1
            return
        if isinstance(msg, EndMsg):
            self.ended.add(cam)
            end_ts = self.progress.get(cam, -math.inf)
            for key, t in self.tracks.items():  # a track cut by the end of the stream ends with it
                if key[0] == cam and not t.ended:
                    self.finish(t, max(end_ts, t.last_ts))
            self.decide()
            return
        if not isinstance(msg, EmbeddingsMsg):
            self.counters["unexpected"] += 1
            return
        ts = msg.ts
        self.live = self.live or msg.live
        self.progress[cam] = max(self.progress.get(cam, -math.inf), ts)
        self.heard[cam] = time.monotonic()
        embs = msg.embeddings
        if len(embs) and embs.shape[1] != self.config.matcher.embedding_dim:
            self.counters["bad_embeddings"] += 1
            log.warning("camera %s: embeddings of shape %s dropped", cam, embs.shape)
            embs = np.zeros((0, self.config.matcher.embedding_dim), np.float32)
        for entry in msg.tracks:
            self.track_event(cam, entry, embs, msg.jpegs)
        if msg.wall_ts:
            self.latency_ms.append(1e3 * (time.time() - msg.wall_ts))
        self.decide()

    def track_event(self, cam: str, e: TrackEntry, embs: np.ndarray, jpegs: tuple[bytes, ...] | None) -> None:
        key, ts = (cam, e.track_id), e.ts
        t = self.tracks.get(key)
        if t is None:
            t = self.tracks[key] = TrackBuffer(cam, key[1], ts, ts)
        t.last_ts = max(t.last_ts, ts)
        t.frame_index = e.frame_index
        t.box = list(e.xyxy)
        if e.state in (TrackState.ACTIVE, TrackState.STARTED):
            self.add_sighting(t, ts, e.xyxy)
        k = e.row
        if 0 <= k < len(embs) and np.isfinite(embs[k]).all() and np.linalg.norm(embs[k]) > 0:
            t.ts.append(ts)
            t.embs.append(embs[k])
            t.quality.append(e.quality)
            if self.keep_jpegs:  # kept in step with embs
                t.jpegs.append(jpegs[k] if jpegs is not None else b"")
        if e.state == TrackState.LOST:
            t.lost_ts = t.lost_ts if t.lost_ts is not None else ts
        elif e.state in (TrackState.ACTIVE, TrackState.STARTED):
            t.lost_ts = None
        if e.state == TrackState.ENDED:
            self.finish(t, ts)
        elif not t.queued and t.embs and self.mature(t):
            t.queued = True
            self.enqueue(ts, t)
        elif t.queued and t.global_id is None and self.config.match.ambiguous_wait_s > 0:
            # Queued but not placed: a snapshot at every sighting, so that if the first match is deferred, the next
            # try is taken at video times that do not depend on when the deferral happened (message timing).
            self.enqueue(ts, t, retry=True)

    def mature(self, t: TrackBuffer) -> bool:
        """Ready for a first match: enough crops (or tracked long enough) and old enough (see MatchStageConfig)."""
        m, age = self.config.match, t.last_ts - t.start_ts
        return age >= m.min_age_s and (len(t.embs) >= m.min_crops or age >= m.mature_after_s)

    def add_sighting(self, t: TrackBuffer, ts: float, xyxy: tuple[float, float, float, float]) -> None:
        if t.first_box is None:
            t.first_box = xyxy
        gx = gy = math.nan
        h = self.grounds.get(t.camera_id)
        if h is not None:
            g, ok = h.project(foot_points(np.array(xyxy)))
            if ok[0]:
                gx, gy = float(g[0, 0]), float(g[0, 1])
            else:  # a box whose feet are above the horizon: a false detection or a bad calibration
                self.counters["ground_skipped"] += 1
        if not t.path or ts > t.path[-1][0]:
            t.path.append((ts, *xyxy, gx, gy))

    def motion(self, t: TrackBuffer, as_of: float) -> TrackMotion | None:
        """The track as it was at ``as_of`` (None if not seen yet): what the link rules compare."""
        seen = [p for p in t.path if p[0] <= as_of]
        if not seen or t.first_box is None:
            return None
        ground = None
        if self.grounds.get(t.camera_id) is not None:
            ground = GroundTrack(maxlen=PATH_LENGTH)
            for p in seen:
                if not math.isnan(p[5]):
                    ground.add(p[0], np.array(p[5:7]))
        return TrackMotion(t.camera_id, t.track_id, t.start_ts, seen[-1][0], np.array(t.first_box),
                           np.array(seen[-1][1:5]), ground)

    def motions(self, as_of: float) -> list[TrackMotion]:
        """Every running and recently ended track as of ``as_of`` (computed once per decision time)."""
        return [m for o in [*self.tracks.values(), *self.recent] if (m := self.motion(o, as_of)) is not None]

    def links(self, t: TrackBuffer, as_of: float, others: list[TrackMotion]) -> dict[tuple[str, int], int]:
        """Evidence on a track not placed yet, from ``others`` (:meth:`motions`; its own entry is skipped)."""
        me = self.motion(t, as_of)
        if me is None:
            return {}
        found = links_for(me, others, self.config.match.continuity, self.config.geometry)
        log.debug("links of %s/%s at %.2f: %s", t.camera_id, t.track_id, as_of, found)
        for v in found.values():
            self.counters[{AGREE: "links_agree", CONTINUES: "links_continue"}.get(v, "links_disagree")] += 1
        return found

    def ground_xy(self, t: TrackBuffer, as_of: float) -> list[float] | None:
        """The track's latest ground position at ``as_of``, for events (None: uncalibrated or not seen)."""
        for p in reversed(t.path):
            if p[0] <= as_of and not math.isnan(p[5]):
                return [round(p[5], 2), round(p[6], 2)]
        return None

    def finish(self, t: TrackBuffer, ts: float) -> None:
        t.ended = True
        self.enqueue(ts, t)

    def enqueue(self, ts: float, t: TrackBuffer, retry: bool = False) -> None:
        self._n += 1
        snap = Snapshot(t.last_ts, t.frame_index, t.box, len(t.embs), t.ended,
                        t.lost_ts if t.lost_ts is not None else t.last_ts, retry)
        heapq.heappush(self.ready, (ts, t.camera_id, t.track_id, self._n, snap))

    # -- decisions ------------------------------------------------------------------------------------------
    def watermark(self) -> float:
        active = [c.id for c in self.config.cameras if c.id not in self.ended]
        if self.live:
            now = time.monotonic()
            active = [c for c in active if now - self.heard.get(c, self.started) < self.config.match.max_lateness_s]
        if not active:
            return math.inf
        return min(self.progress.get(c, -math.inf) for c in active)

    def idle(self) -> None:
        if self.live and self.ready:
            self.decide()

    def decide(self) -> None:
        """Match the ready tracks before the watermark, one decision time at a time: batches then depend only
        on video time, never on message timing, and a replay decides exactly as before. The bound is strict
        because a camera that has reached time T can still make tracks ready at T (in the same message)."""
        mark = self.watermark()
        while self.ready and self.ready[0][0] < mark:
            ts0 = self.ready[0][0]
            due: dict[tuple[str, int], Snapshot] = {}
            while self.ready and self.ready[0][0] == ts0:
                _, cam, tid, _, snap = heapq.heappop(self.ready)
                t = self.tracks.get((cam, tid))
                if t is not None and (not snap.retry or self.retry_due(t)):
                    due[(cam, tid)] = snap
            if due:
                self.refresh_active(ts0, set(due))
                self.match([(self.tracks[k], snap) for k, snap in sorted(due.items())], ts0)

    @staticmethod
    def retry_due(t: TrackBuffer) -> bool:
        """A deferred track is tried again at each sighting: new crops, the rivals' other sightings (a rival seen
        elsewhere in the same camera at the same time is ruled out) and the other deferred tracks of the same
        moment (decided jointly) may settle it; once its wait is over it is decided for good (joined or founded).
        Each try is a decision time of its own (the running tracks' spans refreshed, links computed): a few
        milliseconds, five times a second per deferred track at 5 detections per second."""
        return t.global_id is None and t.deferred_ts is not None

    def provisional(self, t: TrackBuffer, s: Snapshot, as_of: float) -> bool:
        """May this decision be deferred if ambiguous: a running, unplaced track within its wait."""
        wait = self.config.match.ambiguous_wait_s
        return (not s.ended and t.global_id is None and wait > 0
                and (t.deferred_ts is None or as_of - t.deferred_ts < wait))

    def refresh_active(self, now_ts: float, exclude: set[tuple[str, int]]) -> None:
        """Tell the matcher how long the tracks matched earlier have been seen, as of ``now_ts``.

        An identity remembers a track's time span as of its last match; without this, a second person
        appearing later in the same camera could join the identity of a person still standing there. The
        summaries repeat the crops already counted, so prototypes do not change; only the time spans grow.
        """
        from reid.identity.matcher import TrackSummary

        summaries = []
        for key, t in sorted(self.tracks.items()):
            if key in exclude or t.global_id is None or not t.matched_crops:
                continue
            # Seen until when, as of now_ts: from the track's path (every message up to now_ts has arrived from
            # every camera), never from its latest state, which depends on how far each camera got.
            last_seen = next((p[0] for p in reversed(t.path) if p[0] <= now_ts), None)
            if last_seen is None:
                continue
            n = t.matched_crops
            s = TrackSummary.from_crops(t.camera_id, t.track_id, np.array(t.ts[:n]), np.stack(t.embs[:n]),
                                        np.array(t.quality[:n]), top_k=self.config.matcher.crops_per_track)
            summaries.append(replace(s, start_ts=t.start_ts, end_ts=max(s.end_ts, last_seen)))
        if summaries:
            self.matcher.match(summaries)
            self.counters["refreshed_tracks"] += len(summaries)

    def match(self, batch: list[tuple[TrackBuffer, Snapshot]], as_of: float) -> None:
        from reid.identity.matcher import TrackSummary

        # A track that ended younger than min_age_s without an identity is a fragment (a false detection, a
        # person half-seen at the edge): it founds no identity of its own, and makes no events.
        short = {(t.camera_id, t.track_id) for t, s in batch if s.ended and t.global_id is None
                 and s.last_seen_ts - t.start_ts < self.config.match.min_age_s}
        self.counters["short_tracks"] += len(short)
        batch = [(t, s) for t, s in batch if (t.camera_id, t.track_id) not in short]
        for key in short:
            del self.tracks[key]
        with_embs = [(t, s) for t, s in batch if s.num_crops]
        others = self.motions(as_of) if any(t.global_id is None for t, _ in with_embs) else []
        # The time span is the track's (first seen .. last seen), not its crops': the matcher's co-occurrence
        # check must see a person standing in view the whole time, even if only their first crop was sent.
        summaries = [replace(TrackSummary.from_crops(t.camera_id, t.track_id, np.array(t.ts[: s.num_crops]),
                                                     np.stack(t.embs[: s.num_crops]),
                                                     np.array(t.quality[: s.num_crops]),
                                                     top_k=self.config.matcher.crops_per_track),
                             start_ts=t.start_ts, end_ts=max(s.last_seen_ts, t.start_ts),
                             links=self.links(t, as_of, others) if t.global_id is None else {},
                             provisional=self.provisional(t, s, as_of))
                     for t, s in with_embs]
        t0 = time.perf_counter()
        results = self.matcher.match(summaries) if summaries else []
        self.counters["match_ms_total"] += int(1e3 * (time.perf_counter() - t0))
        for (t, s), r in zip(with_embs, results, strict=True):
            if r.global_id is None:  # ambiguous: no identity yet, tried again at its next sighting (retry_due)
                self.counters["deferred_tracks" if t.deferred_ts is None else "deferred_retries"] += 1
                t.deferred_ts = as_of if t.deferred_ts is None else t.deferred_ts
                continue
            first = t.global_id is None
            t.global_id = r.global_id
            t.matched_crops = s.num_crops
            self.counters["matched_tracks"] += first
            if first:
                kind, from_cam = self.assignment_kind(r)
                extra = {}
                if self.config.events_include_crops and kind in (NEW, MOVED):
                    extra["crop_jpeg"] = self.best_crop_b64(t, s)
                self.publish(kind, t, s, r.similarity, from_camera=from_cam, reason=r.reason, **extra)
        self.update_albums(batch, as_of)
        for t, s in batch:
            if s.ended:
                self.publish(ENDED, t, s, None, duration_s=round(s.last_ts - t.start_ts, 3), num_crops=s.num_crops,
                             last_seen_ts=round(s.last_seen_ts, 4))
                del self.tracks[(t.camera_id, t.track_id)]
                if t.global_id is not None:
                    t.embs, t.jpegs = [], []  # only its path is needed from now on
                    self.recent.append(t)

    def update_albums(self, batch: list[tuple[TrackBuffer, Snapshot]], as_of: float) -> None:
        """Each placed track's appearance (camera, first and last seen, ground position) and its best crop go to
        its identity's album (:mod:`reid.identity.album`); albums past the gallery's retention are pruned now and
        then (track time, as the matcher's expiry)."""
        g = self.config.gallery
        for t, s in batch:
            if t.global_id is None:
                continue
            ground = self.ground_xy(t, s.last_ts) if self.grounds.get(t.camera_id) is not None else None
            app = Appearance(t.camera_id, t.track_id, t.start_ts, max(s.last_seen_ts, t.start_ts),
                             tuple(ground) if ground else None)
            best = self.best_crop(t, s) if g.store_crops else None
            jpeg, quality = (t.jpegs[best], t.quality[best]) if best is not None else (b"", 0.0)
            self.album.record(t.global_id, app, jpeg, quality)
            self.counters["album_writes"] += 1
        if as_of - self._last_prune >= self.config.matcher.expire_every_s:
            self._last_prune = as_of
            pruned = self.album.prune(as_of - g.max_age_s, g.max_identities)
            self.counters["albums_pruned"] += len(pruned)

    @staticmethod
    def best_crop(t: TrackBuffer, s: Snapshot) -> int | None:
        """Index of the highest-quality crop among those the decision used (the snapshot's, so a replay picks the
        same crop whatever the message timing); None if none of them could be encoded."""
        usable = [i for i in range(min(s.num_crops, len(t.jpegs))) if t.jpegs[i]]
        return max(usable, key=lambda i: t.quality[i], default=None)  # ties: the earliest

    @classmethod
    def best_crop_b64(cls, t: TrackBuffer, s: Snapshot) -> str | None:
        """Base64 JPEG of :meth:`best_crop` for an event; None if there is none."""
        best = cls.best_crop(t, s)
        return None if best is None else base64.b64encode(t.jpegs[best]).decode("ascii")

    def assignment_kind(self, result) -> tuple[str, str | None]:
        if result.is_new:
            return NEW, None
        ident = self.matcher.get(result.global_id)
        earlier = [r for r in (ident.tracks if ident else []) if (r.camera_id, r.track_id) !=
                   (result.camera_id, result.track_id)]
        # Ties (tracks still running are all seen "until now") are broken by start, then camera and track, so the
        # event does not depend on the order in which the identity's record lists its tracks.
        latest = max(earlier, key=lambda r: (r.end_ts, r.start_ts, r.camera_id, r.track_id), default=None)
        prev = latest.camera_id if latest is not None else None
        if prev is not None and prev != result.camera_id:
            return MOVED, prev
        return SEEN, None

    def publish(self, kind: str, t: TrackBuffer, s: Snapshot, similarity: float | None,
                from_camera: str | None = None, **extra) -> None:
        seq = int(self.store.client.incr(self.seq_key))
        if self.grounds.get(t.camera_id) is not None:
            extra["ground_xy"] = self.ground_xy(t, s.last_ts)
        event = make_event(kind, seq, t.camera_id, t.track_id, t.global_id, s.last_ts, s.frame_index, s.box,
                           similarity, from_camera, **extra)
        self.pub.send_multipart(encode_event(event))
        self.counters["events"] += 1
        self.counters[kind] += 1

    def stats(self) -> dict:
        return {**super().stats(), "identities": len(self.matcher.gallery) if hasattr(self, "matcher") else 0,
                "open_tracks": len(getattr(self, "tracks", {}))}
