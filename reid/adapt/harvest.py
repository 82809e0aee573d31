"""Replay a site's recorded video through the pipeline's own detector and tracker, and keep what learning needs:
every track's sightings (time, box, ground position on calibrated cameras) and its clean crops.

Why the pipeline's parts and not a separate tool: the adapted weights will embed the crops *this* detector cuts
and *this* tracker groups, with their misalignment and their swaps; learning from anything else would learn
another camera.

A crop is kept only when it is *clean*: no other detection of the frame overlaps its box by more than
:data:`detectors.appearance.CLEAN_IOU`, and it is tall enough to embed. In a crowd the person in front leaks into
the crop of the one behind; a pseudo-label on such a crop would teach the network to confuse the two.

A calibrated camera's track is cut where it comes out of a crossing (:func:`split_at_crossings`): a tracker that
follows two people through a crossing sometimes comes out on the other one, and nothing on one camera tells which,
so only the stretch between two crossings is surely one person; the other view's ground joins the pieces again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detectors.appearance import CLEAN_IOU
from detectors.crops import crop_views
from detectors.types import Detections, within_roi
from reid.identity.geometry import GeometryConfig, Homography, box_iou, foot_points

log = logging.getLogger(__name__)

PIECE_STRIDE = 1_000_000  # piece n of track k is k * PIECE_STRIDE + n (a track has far fewer sightings than this)


class HarvestError(ValueError):
    """A config that cannot be learnt from (no recorded video, too little of it); the message says which."""


@dataclass
class Crop:
    ts: float
    frame_index: int
    image: np.ndarray  # BGR uint8, the detector's box as the embed stage would cut it


@dataclass
class HarvestedTrack:
    """One per-camera track: its sightings (video time, xyxy box, ground x/y or NaN, whether another detection
    overlapped it) and its clean crops."""

    recording: str
    camera_id: str
    track_id: int
    ts: list[float] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    ground: list[tuple[float, float]] = field(default_factory=list)
    crowded: list[bool] = field(default_factory=list)
    crops: list[Crop] = field(default_factory=list)
    parent: int | None = None  # a piece's track (:func:`pieces`)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.recording, self.camera_id, self.track_id)

    @property
    def start_ts(self) -> float:
        return self.ts[0]

    @property
    def end_ts(self) -> float:
        return self.ts[-1]


@dataclass
class Recording:
    """What one config's recorded video yielded: its cameras (id -> homography or None), its ground rules, its
    tracks and the video time covered per camera."""

    name: str
    config_path: Path
    cameras: dict[str, Homography | None]
    geometry: GeometryConfig | None
    tracks: list[HarvestedTrack]
    duration_s: dict[str, float]
    sources: dict[str, str]


def spread(crops: list[Crop], most: int) -> list[Crop]:
    """At most ``most`` crops spread evenly over the track: a long track must not outweigh many short ones."""
    if len(crops) <= most:
        return crops
    keep = np.linspace(0, len(crops) - 1, most).round().astype(int)
    return [crops[i] for i in sorted(set(keep.tolist()))]


def harvest(config_path: str | Path, duration_s: float | None = None, max_crops_per_track: int = 40,
            progress: bool = True) -> Recording:
    """Detect and track every recorded camera of the config at its ``detect_fps`` (the first ``duration_s``
    seconds when given). Raises :class:`HarvestError` for a config with a live or image-folder camera only."""
    from detectors import PersonDetector
    from detectors.tracking import BestCropSelector
    from pipeline.config import load_config
    from pipeline.detect_stage import association_reid, camera_tracker, embed_detections
    from pipeline.sources import camera_fps, camera_stride, is_video_file, probe_video, video_frames

    config_path = Path(config_path)
    cfg = load_config(config_path)
    recorded = [c for c in cfg.cameras if is_video_file(c)]
    if not recorded:
        raise HarvestError(f"{config_path}: no camera plays a recorded video file; adaptation learns from recorded "
                           "video (record the live cameras first, or give a config of recordings)")
    skipped = [c.id for c in cfg.cameras if not is_video_file(c)]
    if skipped:
        log.warning("%s: cameras %s are not recorded video files and are left out", config_path, skipped)
    d = cfg.detector
    detector = PersonDetector(d.weights, imgsz=d.imgsz, conf=d.conf, iou=d.iou, device=d.device)
    trackers = {cam.id: camera_tracker(cfg, cam, selector=BestCropSelector(1, min_gap_s=math.inf)) for cam in recorded}
    # The association's own embedder, as the detect stage builds it: the tracker must group crops as the pipeline's.
    embedder = association_reid(cfg).build_embedder() if any(t.wants_embeddings for t in trackers.values()) else None
    name = cfg.name or config_path.stem
    tracks: list[HarvestedTrack] = []
    durations: dict[str, float] = {}
    for cam in recorded:
        fps = camera_fps(cam)
        stride = camera_stride(cam, fps)
        _, count = probe_video(cam.source)
        tracker = trackers[cam.id]
        homography = cam.ground()
        open_tracks: dict[int, HarvestedTrack] = {}
        last_ts = 0.0
        total = math.ceil((min(count, duration_s * fps) if duration_s else count) / stride) if count else None
        frames = video_frames(cam.source, stride, fps=fps, max_ts=duration_s)
        bar = tqdm(frames, total=total, desc=f"{name}/{cam.id}", unit="frame", leave=False,
                   disable=None if progress else True)  # None: shown on a terminal only
        for index, ts, frame in bar:
            dets = within_roi(detector.detect([frame])[0], cam.roi)  # as the detect stage does
            dets = Detections(dets.xyxy, dets.conf)
            embs = embed_detections(embedder, [frame], [dets], d.crop_pad_frac,
                                    [tracker.embedding_wanted(dets, ts)])[0][0] \
                if embedder is not None and tracker.wants_embeddings else None
            tracker.update(frame, index, ts, dets, embs)
            _collect(tracker.tracks, dets.xyxy, frame, index, ts, name, cam.id, homography, open_tracks,
                     d.crop_pad_frac, d.min_crop_height_px)
            last_ts = ts
        durations[cam.id] = last_ts
        for t in open_tracks.values():
            t.crops = spread(t.crops, max_crops_per_track)
            tracks.append(t)
    return Recording(name, config_path, {c.id: c.ground() for c in recorded}, cfg.geometry, tracks, durations,
                     {c.id: str(c.source) for c in recorded})


def _collect(tracked: Detections, all_boxes: np.ndarray, frame: np.ndarray, index: int, ts: float,
             recording: str, camera_id: str, homography: Homography | None, open_tracks: dict[int, HarvestedTrack],
             pad_frac: float, min_height: int) -> None:
    """Add this frame's tracked boxes to their tracks, with a crop for each clean one."""
    from pipeline.embed_stage import crop_problem

    ids = tracked.track_id if tracked.track_id is not None else np.zeros(0, np.int64)
    if not len(ids):
        return
    boxes = tracked.xyxy[: len(ids)].astype(np.float64)
    overlap = box_iou(boxes, np.asarray(all_boxes, np.float64)) if len(all_boxes) else np.zeros((len(ids), 0))
    # a tracked box is one of the frame's detections: its own IoU of 1 is not an overlap
    overlap[overlap > 0.999] = 0.0
    crowded = overlap.max(axis=1) > CLEAN_IOU if overlap.shape[1] else np.zeros(len(ids), bool)
    ground = homography.project(foot_points(boxes))[0] if homography is not None else None
    views = crop_views(frame, boxes, pad_frac)
    for i, tid in enumerate(ids.tolist()):
        t = open_tracks.setdefault(int(tid), HarvestedTrack(recording, camera_id, int(tid)))
        b = tuple(float(v) for v in boxes[i])
        t.ts.append(ts)
        t.boxes.append(b)  # type: ignore[arg-type]
        t.ground.append((float(ground[i, 0]), float(ground[i, 1])) if ground is not None else (math.nan, math.nan))
        t.crowded.append(bool(crowded[i]))
        if not crowded[i] and b[3] - b[1] >= min_height and crop_problem(views[i]) is None:
            t.crops.append(Crop(ts, index, views[i].copy()))


def pieces(t: HarvestedTrack) -> list[HarvestedTrack]:
    """``t`` cut at each sighting where it comes clear of another detection's box (overlap above
    :data:`detectors.appearance.CLEAN_IOU`) after one or more crowded sightings; the crowded sightings stay with the
    piece before (they carry no crop). Piece ``n`` of track ``k`` is numbered ``k * PIECE_STRIDE + n``.

    Why: on the crowd clip, scored with its ground truth (``benchmarks/pseudo_labels.py --compare-cuts``), 5 % of
    the whole tracks' crops are another person than their label's, taken after the tracker came out of a
    crossing on the wrong person; pieces never joined again halve that. :func:`reid.adapt.pseudo.build_labels`
    joins the pieces again unless the other view's ground puts two of them with different people."""
    out: list[HarvestedTrack] = []
    piece = None
    for i, ts in enumerate(t.ts):
        if piece is None or (t.crowded[i - 1] and not t.crowded[i]):
            piece = HarvestedTrack(t.recording, t.camera_id, t.track_id * PIECE_STRIDE + len(out), parent=t.track_id)
            out.append(piece)
        piece.ts.append(ts)
        piece.boxes.append(t.boxes[i])
        piece.ground.append(t.ground[i])
        piece.crowded.append(t.crowded[i])
    crops = {c.ts: c for c in t.crops}
    for p in out:
        p.crops = [crops[ts] for ts in p.ts if ts in crops]
    return out


def split_at_crossings(recording: Recording) -> Recording:
    """The recording with each track of a calibrated camera cut into :func:`pieces`; an uncalibrated camera's
    tracks stay whole. Why not those: there only appearance can join the pieces again, and it joins them badly
    (crowd clip with its calibration hidden: of the cross-camera pairs of tracks sharing a label, 0.85 are one
    person with whole tracks, 0.33 with pieces; ``benchmarks/pseudo_labels.py --compare-cuts``)."""
    return replace(recording, tracks=[p for t in recording.tracks
                                      for p in (pieces(t) if recording.cameras.get(t.camera_id) is not None else [t])])


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def embed_tracks(recordings: Sequence[Recording], embedder, most: int | None = None,  # noqa: ANN001 - an Embedder
                 ) -> dict[tuple[str, str, int], np.ndarray]:
    """Each track's clean crops embedded, rows in time order (at most ``most``, spread over the track); tracks
    without a clean crop are left out. The adaptation's appearance merges and the site check both start here."""
    out = {}
    for r in recordings:
        for t in r.tracks:
            crops = spread(t.crops, most) if most else t.crops
            if crops:
                out[t.key] = embedder.embed([c.image for c in crops])
    return out


def harvest_all(configs: Sequence[str | Path], duration_s: float | None = None, max_crops_per_track: int = 40,
                progress: bool = True) -> list[Recording]:
    """:func:`harvest` of each config; recordings must have distinct names (the config's ``name``)."""
    recordings = [harvest(c, duration_s, max_crops_per_track, progress) for c in configs]
    names = [r.name for r in recordings]
    if len(set(names)) != len(names):
        raise HarvestError(f"configs need distinct names to be told apart, got {names}")
    return recordings
