"""Annotated videos for a person to check the linking: each camera's frames with its tracked boxes, labelled
with the global identity the matcher gave the track, one colour per identity.

Rendered after the run from the detect stage's track logs and the identity events, so every frame of a track
shows its final global id (a live overlay could only label a track after its first match).
"""

from __future__ import annotations

import colorsys
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import cv2

from pipeline.config import PipelineConfig
from pipeline.sources import camera_fps, is_video_file, video_frames

log = logging.getLogger(__name__)


def identity_colour(global_id: int) -> tuple[int, int, int]:
    h = (global_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def read_track_log(run_dir: Path, camera_id: str) -> dict[int, list[list[float]]]:
    boxes: dict[int, list[list[float]]] = {}
    for path in sorted((run_dir / "tracks").glob(f"{camera_id}.*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed process
            boxes.setdefault(int(rec["f"]), []).extend(rec["t"])
    return boxes


def render_videos(config: PipelineConfig, events: Iterable[dict], out_dir: Path,
                  duration_s: float | None = None) -> list[Path]:
    """One annotated video per recorded camera; ``events`` is read once (a run's events, or those read back from
    the supervisor's spill file), and the last global id given to a track labels all its frames."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gid = {(e["camera_id"], e["track_id"]): e["global_id"] for e in events if e.get("global_id") is not None}
    written = []
    for cam in config.cameras:
        if not is_video_file(cam):
            log.warning("camera %s: --save-video renders recorded video files only", cam.id)
            continue
        boxes = read_track_log(config.resolved_run_dir, cam.id)
        fps = camera_fps(cam)
        path = out_dir / f"{cam.id}.mp4"
        writer = None
        last: list = []
        for index, _, frame in video_frames(cam.source, 1, 0, fps, duration_s):
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            last = boxes.get(index, last)  # between detected frames, keep the last boxes
            for track_id, x1, y1, x2, y2 in last:
                g = gid.get((cam.id, int(track_id)))
                colour = identity_colour(g) if g is not None else (160, 160, 160)
                label = f"id {g}" if g is not None else f"t{int(track_id)}"
                cv2.rectangle(frame, (int(x1), int(y1)), (int(x2), int(y2)), colour, 2)
                cv2.putText(frame, label, (int(x1), max(12, int(y1) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                            cv2.LINE_AA)
            cv2.putText(frame, f"{cam.id}  frame {index}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255),
                        1, cv2.LINE_AA)
            writer.write(frame)
        if writer is not None:
            writer.release()
            written.append(path)
    return written
