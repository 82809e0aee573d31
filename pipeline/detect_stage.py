"""Detect stage: YOLO on the newest frame of every camera at once, per-camera tracking, track crops out.

Frames are detected in batches of one frame per camera. Replay processes every frame in order; live frames
that queued up behind a slow detector are skipped in favour of each camera's newest (counted as dropped).
Each processed frame produces one ``crops`` message: the camera's video time (which lets the matcher know how
far each camera has got) plus the track events of that frame, with a crop for the few that were selected, and
the box of every other track seen in it.
With ``detector.appearance`` on (the default), the detections whose association appearance can decide (boxes that
touch several tracks, re-finds, new tracks, and every detection once per ``appearance.refresh_s``: each tracker's
``embedding_wanted``) are embedded by HA-CNN here too, in one call for the batch, and the trackers mix that
appearance into their association (``detectors.appearance``): that is what keeps tracks apart when people cross.
The few crops per track selected for the matcher are embedded again by the embed stage: the messages do not carry
the detect stage's embeddings on.
With ``track_log`` (``--save-video`` and ``--tracks-out``, which read it after the run), each recorded camera's
tracks are logged per frame (frame, track id, box): bounded by the file's length; live cameras are never logged.
With the HTTP service on, each camera's latest frame with its boxes and track ids is written every
``http.snapshot_every_s`` (``pipeline.snapshots``: the service labels the boxes with global ids when it serves them).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from detectors.crops import crop_views
from detectors.types import Detections, TrackState, within_roi
from pipeline.config import CameraConfig, PipelineConfig, ReidConfig
from pipeline.embed_stage import crop_problem
from pipeline.messages import CropsMsg, EndMsg, FrameMsg, Msg, TrackEntry
from pipeline.snapshots import SnapshotWriter, snapshot_folder
from pipeline.stage import Stage
from reid.identity.tracker import TRACK_ID_STRIDE
from reid.model_spec import EMBEDDING_DIM

if TYPE_CHECKING:
    from detectors import CameraTracker
    from detectors.tracking import BestCropSelector
    from trt_engines.embedder import Embedder

log = logging.getLogger(__name__)



class DetectStage(Stage):
    name = "detect"
    input = "detect"
    output = "embed"

    def setup(self) -> None:
        # At most two frames per camera leave the socket queue per turn: the rest stay there, so replay sources
        # feel back-pressure and a killed detector loses only what it held.
        self.max_drain = 2 * len(self.config.cameras)
        from detectors import PersonDetector

        d = self.config.detector
        self.detector = PersonDetector(d.weights, imgsz=d.imgsz, conf=d.conf, iou=d.iou, device=d.device)
        self.trackers = {cam.id: camera_tracker(self.config, cam) for cam in self.config.cameras}
        self.embedder = None
        if any(t.wants_embeddings for t in self.trackers.values()):
            self.embedder = association_reid(self.config).build_embedder()
            log.info("appearance in the association: embedder %s", self.embedder.description)
        self.rois = {c.id: c.roi for c in self.config.cameras}
        self.pending: dict[str, deque[FrameMsg | EndMsg]] = defaultdict(deque)
        self.track_logs = {}
        if self.options.get("track_log"):
            from pipeline.sources import is_video_file

            log_dir = self.config.resolved_run_dir / "tracks"
            log_dir.mkdir(parents=True, exist_ok=True)
            self.track_logs = {c.id: open(log_dir / f"{c.id}.{self.instance}.jsonl", "a")
                               for c in self.config.cameras if is_video_file(c)}
        http = self.config.http
        self.snapshots = SnapshotWriter(snapshot_folder(self.config.resolved_run_dir), http.snapshot_every_s) \
            if http is not None else None

    def teardown(self) -> None:
        for f in getattr(self, "track_logs", {}).values():
            f.close()

    def handle(self, msg: Msg) -> None:
        cam = msg.camera_id
        if cam not in self.trackers:
            self.counters["unknown_camera"] += 1
            return
        if isinstance(msg, FrameMsg):  # a BGR uint8 image: FrameMsg checks that, and decode() drops the rest
            q = self.pending[cam]
            if msg.live and q:
                self.counters["dropped_frames"] += len(q)  # live: only the newest frame matters
                q.clear()
            q.append(msg)
        elif isinstance(msg, EndMsg):
            self.pending[cam].append(msg)

    def after_turn(self) -> None:
        self.detect_pending()

    def detect_pending(self) -> None:
        """Detect the frames ``handle`` queued, one frame per camera per batch (one detector call for every camera's
        newest frame), then pass on the ends of stream that were queued behind them."""
        while any(self.pending.values()):
            batch, ends = [], []
            for q in self.pending.values():
                if q:
                    m = q.popleft()
                    (ends if isinstance(m, EndMsg) else batch).append(m)
            if batch:
                self.process(batch)
            for m in ends:
                self.end_camera(m.camera_id)
            if self.stop.is_set():
                break

    def process(self, batch: list[FrameMsg]) -> None:
        t0 = time.perf_counter()
        frames = [m.frame for m in batch]
        detections = [self.in_roi(m.camera_id, d) for m, d in zip(batch, self.detector.detect(frames), strict=True)]
        embeddings = self.embed_detections(batch, detections)
        for m, frame, dets, embs in zip(batch, frames, detections, embeddings, strict=True):
            cam = m.camera_id
            events = self.trackers[cam].update(frame, m.frame_index, m.ts, dets, embs)
            tracks = self.trackers[cam].tracks
            self.emit(cam, m.frame_index, m.ts, m.wall_ts, events, live=m.live, sightings=tracks)
            if self.snapshots is not None and self.snapshots.due(cam):
                ids = tracks.track_id.tolist() if tracks.track_id is not None else []
                self.snapshots.write(cam, m.frame_index, m.ts, frame, tracks.xyxy[:len(ids)],
                                     [self.global_track_id(int(t)) for t in ids])
            if cam in self.track_logs:
                self.log_tracks(cam, m.frame_index, m.ts, tracks)
            self.counters["frames"] += 1
            self.counters["detections"] += len(dets)
        self.latency_ms.append(1e3 * (time.perf_counter() - t0) / len(batch))

    def stats(self) -> dict:
        """The stage's counters, and per camera with appearance the (same person, two people) cosine levels its
        tracker has measured (docs: detectors/appearance.py)."""
        base = super().stats()
        levels = {c: t.similarity_levels for c, t in getattr(self, "trackers", {}).items() if t.wants_embeddings}
        if levels:
            base["appearance_levels"] = {c: [round(v, 3) for v in lv] for c, lv in levels.items() if lv}
        return base

    def in_roi(self, cam: str, dets: Detections) -> Detections:
        return within_roi(dets, self.rois[cam])

    def embed_detections(self, batch: list[FrameMsg], detections: list[Detections]) -> list[np.ndarray | None]:
        """One embedding row per detection for the cameras whose tracker uses appearance, the detections it wants
        embedded filled in (one embedder call for the whole batch), the others zero; a crop that cannot be embedded
        gets a zero row too (its detection looks like nobody known)."""
        out: list[np.ndarray | None] = [None] * len(batch)
        if self.embedder is None:
            return out
        wanted = [i for i, m in enumerate(batch) if self.trackers[m.camera_id].wants_embeddings]
        t0 = time.perf_counter()
        rows = [self.trackers[batch[i].camera_id].embedding_wanted(detections[i], batch[i].ts) for i in wanted]
        embs, crops = embed_detections(self.embedder, [batch[i].frame for i in wanted],
                                       [detections[i] for i in wanted], self.config.detector.crop_pad_frac, rows)
        if crops:
            self.counters["association_crops"] += crops
            self.counters["association_embed_ms"] += round(1e3 * (time.perf_counter() - t0))
        for i, e in zip(wanted, embs, strict=True):
            out[i] = e
        return out

    def log_tracks(self, cam: str, frame_index: int, ts: float, tracks: Detections) -> None:
        self.track_logs[cam].write(json.dumps({
            "f": frame_index, "ts": round(ts, 4),
            "t": [[self.global_track_id(int(t)), *np.round(b, 1).tolist(), round(float(c), 3)]
                  for t, b, c in zip(tracks.track_id if tracks.track_id is not None else [], tracks.xyxy,
                                     tracks.conf, strict=False)],
        }) + "\n")

    def global_track_id(self, track_id: int) -> int:
        return self.instance * TRACK_ID_STRIDE + track_id

    def emit(self, cam: str, frame_index: int, ts: float, wall_ts: float, events: list, live: bool = False,
             sightings: Detections | None = None) -> None:
        """Send a frame's track events; every other track seen in the frame goes along as a state-only ACTIVE
        entry (its box), so the match stage knows each track's path, not only the frames that gave a crop."""
        tracks, crops = [], []
        for e in events:
            row = -1
            if e.has_crop:
                row = len(crops)
                crops.append(np.ascontiguousarray(e.crop))
            tracks.append(TrackEntry(self.global_track_id(e.track_id), e.state, e.frame_index, e.ts, e.xyxy, e.conf,
                                     e.quality, e.verdicts, row))
        if sightings is not None and sightings.track_id is not None:
            told = {e.track_id for e in events}
            for tid, box, conf in zip(sightings.track_id.tolist(), sightings.xyxy, sightings.conf, strict=True):
                if tid not in told:
                    tracks.append(TrackEntry(self.global_track_id(tid), TrackState.ACTIVE, frame_index, ts,
                                             tuple(box.tolist()), float(conf), 0.0))
        self.counters["crops"] += len(crops)
        self.send(CropsMsg(cam, frame_index, ts, tuple(tracks), tuple(crops), wall_ts=wall_ts, live=live))

    def end_camera(self, cam: str) -> None:
        if cam in self.ended:
            return
        tracker = self.trackers[cam]
        events = tracker.flush()
        last = max((e.ts for e in events), default=None)
        if events:
            self.emit(cam, max(e.frame_index for e in events), last, time.time(), events)
        if cam in self.track_logs:
            self.track_logs[cam].flush()
        self.forward_end(cam)


# Crops sent at crossing exits per track, a second apart at least (detectors.tracking.BestCropSelector): enough for
# a track that lives through many crossings, bounded for one that never ends (a few KB per crop downstream).
CROSSING_CROPS = 32


def camera_tracker(config: PipelineConfig, camera: CameraConfig,
                   selector: BestCropSelector | None = None) -> CameraTracker:
    """The per-camera tracker the detect stage runs for ``camera`` (its detection rate, the detector section's
    tracker settings, its ground gate); ``reid.adapt`` and the benchmarks build theirs here too, so they run the
    shipped one. ``selector``: which crops leave the tracker (default: the detector section's crops per track, and
    as many more at crossing exits where the identity stage looks for swaps)."""
    from detectors import CameraTracker
    from detectors.crops import QualityConfig
    from detectors.tracking import BestCropSelector
    from pipeline.sources import detect_rate

    d = config.detector
    return CameraTracker(camera.id, d.tracker, frame_rate=detect_rate(camera), lost_timeout_s=d.lost_timeout_s,
                         pad_frac=d.crop_pad_frac, quality=QualityConfig(min_height_px=d.min_crop_height_px),
                         selector=selector or BestCropSelector(
                             d.max_crops_per_track,
                             crossing_crops=CROSSING_CROPS if config.checks_swaps(camera.id) else 0),
                         appearance=d.appearance,
                         gate=config.ground_gate(camera.id))


def embed_detections(embedder: Embedder, frames: Sequence[np.ndarray], detections: Sequence[Detections],
                     pad_frac: float, wanted: Sequence[np.ndarray] | None = None) -> tuple[list[np.ndarray], int]:
    """One embedding row per detection of each frame (the per-camera association's), every crop in one embedder
    call; ``wanted`` (one mask per frame, None: every detection) names the detections to embed, the others get a
    zero row. A crop that cannot be embedded gets a zero row too, which makes its detection look like nobody the
    tracker knows. Returns the arrays, one per frame, and how many crops were embedded."""
    out = [np.zeros((len(dets), EMBEDDING_DIM), np.float32) for dets in detections]
    crops, owners = [], []
    for i, (frame, dets) in enumerate(zip(frames, detections, strict=True)):
        mask = np.ones(len(dets), bool) if wanted is None else wanted[i]
        for j, crop in enumerate(crop_views(frame, dets.xyxy, pad_frac)):
            if mask[j] and crop_problem(crop) is None:
                crops.append(crop)
                owners.append((i, j))
    if crops:
        for (i, j), e in zip(owners, embedder.embed(crops), strict=True):
            out[i][j] = e
    return out, len(crops)


def association_reid(config: PipelineConfig) -> ReidConfig:
    """The embedding settings of the per-camera association: the ``reid`` section, with
    ``detector.appearance.weights`` when set (e.g. site-adapted weights for the matcher, the tracker's own kept)."""
    weights = config.detector.appearance.weights
    return config.reid if weights is None else config.reid.model_copy(update={"weights": weights})
