"""Annotated videos for a person to check the linking: each camera's frames with its tracked boxes, labelled
with the global identity the matcher gave the track, one colour per identity.

Rendered after the run from the detect stage's track logs and the identity events, so every frame of a track
shows its final global id (a live overlay could only label a track after its first match).
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from pipeline.calibration import footprint
from pipeline.config import PipelineConfig
from pipeline.events import track_identities, track_parts
from pipeline.gaps import GapFiller
from pipeline.sources import camera_fps, is_video_file, probe_size, video_frames
from pipeline.tracks_out import read_track_log
from reid.identity.geometry import foot_points

log = logging.getLogger(__name__)


def identity_colour(global_id: int) -> tuple[int, int, int]:
    h = (global_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def render_videos(config: PipelineConfig, events: Iterable[dict], out_dir: Path,
                  duration_s: float | None = None) -> list[Path]:
    """One annotated video per recorded camera; ``events`` is read once (a run's events, or those read back from
    the supervisor's spill file), and the last global id given to a track labels all its frames."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events = list(events)
    gid, parts = track_identities(events), track_parts(events)
    filler = GapFiller.from_config(config)
    logs = {c.id: read_track_log(config.resolved_run_dir, c.id, parts) for c in config.cameras}
    written = []
    for cam in config.cameras:
        if not is_video_file(cam):
            log.warning("camera %s: --save-video renders recorded video files only", cam.id)
            continue
        boxes = filler.fill(cam.id, logs, lambda c, t: gid.get((c, t)))
        fps = camera_fps(cam)
        path = out_dir / f"{cam.id}.mp4"
        writer = None
        last: list = []
        for index, _, frame in video_frames(cam.source, 1, 0, fps, duration_s):
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            last = boxes.get(index, last)  # between detected frames, keep the last boxes
            for track_id, x1, y1, x2, y2, *rest in last:  # older logs have no confidence
                g = gid.get((cam.id, int(track_id)))
                colour = identity_colour(g) if g is not None else (160, 160, 160)
                label = f"id {g}" if g is not None else f"t{int(track_id)}"
                filled = bool(rest) and rest[0] == 0.0  # a gap drawn by pipeline.gaps: thin, the person was hidden
                cv2.rectangle(frame, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1 if filled else 2)
                cv2.putText(frame, label, (int(x1), max(12, int(y1) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                            cv2.LINE_AA)
            cv2.putText(frame, f"{cam.id}  frame {index}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255),
                        1, cv2.LINE_AA)
            writer.write(frame)
        if writer is not None:
            writer.release()
            written.append(path)
    return written


def _running_median(points: np.ndarray, k: int = 5) -> np.ndarray:
    """Each point replaced by the median of its k neighbours: one box whose feet were hidden (its foot point
    projects far away) no longer draws a spike across the floor."""
    if len(points) < k:
        return points
    pad = np.concatenate([points[:1].repeat(k // 2, 0), points, points[-1:].repeat(k // 2, 0)])
    return np.median(np.stack([pad[i:i + len(points)] for i in range(k)]), axis=0)


def render_floor(config: PipelineConfig, events: Iterable[dict], path: Path, size_px: int = 900) -> Path | None:
    """A top view of the ground plane: every identity's route across the calibrated cameras (feet of its tracked
    boxes, one colour per global id, as in the videos) over the cameras' footprints. None without calibration."""
    cams = [c for c in config.cameras if c.homography is not None and not c.is_live]
    if not cams:
        return None
    events = list(events)
    gid, parts = track_identities(events), track_parts(events)
    routes: dict[tuple[str, int], list[np.ndarray]] = {}
    footprints: dict[str, np.ndarray] = {}
    for cam in cams:
        h = cam.ground()
        for index in sorted(boxes := read_track_log(config.resolved_run_dir, cam.id, parts).boxes):
            for track_id, x1, y1, x2, y2, *_ in boxes[index]:
                g, ok = h.project(foot_points(np.array([x1, y1, x2, y2])))
                if ok[0]:
                    routes.setdefault((cam.id, int(track_id)), []).append(g[0])
        size = probe_size(cam.source)
        if size is not None:  # the image border, where it lies on the ground
            footprints[cam.id] = footprint(h, *size)
    points = np.concatenate([np.array(r) for r in routes.values()]) if routes else None
    if points is None or len(points) < 2:
        log.warning("floor view: no ground positions to draw")
        return None
    lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    pad = 0.15 * (hi - lo).max() + 1e-6
    lo, hi = lo - pad, hi + pad
    scale = (size_px - 40) / (hi - lo).max()
    canvas = np.full((size_px, size_px, 3), 255, np.uint8)

    def px(p: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(p) - lo) * scale + 20, -10_000, 10_000).astype(np.int32)

    for i, (cam_id, fp) in enumerate(sorted(footprints.items())):
        if len(fp) >= 3:
            shade = (200 - 40 * (i % 3), 200, 160 + 30 * (i % 3))
            cv2.polylines(canvas, [px(fp)], True, shade, 2, cv2.LINE_AA)
            anchor = px(np.median(fp, axis=0))
            cv2.putText(canvas, f"{cam_id} view", tuple(int(v) for v in anchor), cv2.FONT_HERSHEY_SIMPLEX, 0.5, shade,
                        1, cv2.LINE_AA)
    for (cam_id, track_id), route in sorted(routes.items()):
        g = gid.get((cam_id, track_id))
        colour = identity_colour(g) if g is not None else (190, 190, 190)
        pts = px(_running_median(np.array(route)))
        cv2.polylines(canvas, [pts], False, colour, 2, cv2.LINE_AA)
        if g is not None:
            cv2.putText(canvas, f"id {g}", tuple(int(v) for v in pts[-1]), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                        cv2.LINE_AA)
    cv2.putText(canvas, "ground plane (top view): routes by global id, camera footprints", (10, size_px - 10),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)
    return path
