"""``--tracks-out``: every camera's tracked boxes as MOTChallenge files labelled with final global identities.

Written after the run from the detect stage's track logs (every box on every frame the detector ran on) and
the identity events (which global identity each track was given), in the format of ``docs/tracks.md``:
``frame,global_id,x,y,w,h,conf,-1,-1,-1`` with frame = video frame index + 1. Tracks that never received an
identity (too short to be matched) are left out and counted. ``frames.json`` lists the frames the detector ran
on, so ``python -m pipeline.evaluate_mtmc`` scores exactly those.

A person the detector misses for a few frames (mostly someone hidden behind another: on the crowded terrace1
clip 61 % of the occluded people are detected against 96 % of those in the clear) is still there, and the
pipeline knew it: the tracker keeps a lost track for ``detector.lost_timeout_s`` and the matcher continues an
identity across tracks. So the output draws a box on those missed frames, on the straight line between the
person's box before and after (:func:`fill_gaps`), for gaps no longer than the tracker's own ``track_buffer``;
such boxes carry confidence 0, which tells them from detections.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from pipeline.evaluate_mtmc import FRAMES_FILE, MotSequence, frame_ranges
from pipeline.events import track_identities

log = logging.getLogger(__name__)


Rows = list[list[float]]


def read_track_log(run_dir: Path, camera_id: str) -> dict[int, Rows]:
    """A camera's track log (every box on every frame the detector ran on): frame index -> rows
    ``[track_id, x1, y1, x2, y2, conf]``."""
    boxes: dict[int, list[list[float]]] = {}
    for path in sorted((run_dir / "tracks").glob(f"{camera_id}.*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed process
            boxes.setdefault(int(rec["f"]), []).extend(rec["t"])
    return boxes


def fill_gaps(boxes: Mapping[int, Rows], label: Callable[[int], int | None], max_missed: int) -> dict[int, Rows]:
    """``boxes`` (frame index -> rows ``[track_id, x1, y1, x2, y2, conf]``, every frame the detector ran on) with
    a row added on each frame where a person, as ``label`` groups the rows by track id (None: left alone), was
    missed between two sightings at most ``max_missed`` detector frames apart; the box is interpolated linearly,
    carries the earlier row's track id and confidence 0."""
    frames = sorted(boxes)
    position = {f: i for i, f in enumerate(frames)}
    sightings: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for f in frames:
        for row in boxes[f]:
            key = label(int(row[0]))
            if key is not None:
                sightings[key].append((f, row))
    out = {f: list(rows) for f, rows in boxes.items()}
    for seen in sightings.values():
        for (f, a), (g, b) in zip(seen, seen[1:], strict=False):
            missed = frames[position[f] + 1:position[g]]
            if len(missed) > max_missed:
                continue
            for m in missed:
                w = (m - f) / (g - f)
                out[m].append([a[0], *(a[k] + w * (b[k] - a[k]) for k in range(1, 5)), 0.0])
    return out


def bridged_frames(config) -> dict[str, int]:
    """Per camera of ``config`` (a ``PipelineConfig``), the longest gap :func:`fill_gaps` bridges: as many
    detector frames as the tracker keeps a lost track for."""
    from detectors.tracking import buffer_frames
    from pipeline.sources import camera_fps, camera_stride

    out = {}
    for cam in config.cameras:
        fps = camera_fps(cam)
        out[cam.id] = buffer_frames(config.detector.lost_timeout_s, fps / camera_stride(cam, fps))
    return out


def write_tracks(run_dir: Path, camera_ids: Iterable[str], events: Iterable[dict], out_dir: Path,
                 max_missed: Mapping[str, int] | None = None) -> list[Path]:
    """One ``<camera>.txt`` per camera and ``frames.json`` in ``out_dir``; returns the files written.
    ``max_missed`` (camera -> detector frames, :func:`bridged_frames`): fill each global identity's gaps up to
    that long in each camera; none filled without it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gid = track_identities(events)
    frames: dict[str, list[list[int]]] = {}
    written = []
    for cam in camera_ids:
        boxes = read_track_log(run_dir, cam)
        if max_missed and max_missed.get(cam):
            boxes = fill_gaps(boxes, lambda t, cam=cam: gid.get((cam, t)), max_missed[cam])
        lines, unlabelled = [], set()
        for index in sorted(boxes):
            for track_id, x1, y1, x2, y2, *rest in boxes[index]:
                g = gid.get((cam, int(track_id)))
                if g is None:
                    unlabelled.add(int(track_id))
                    continue
                conf = rest[0] if rest else 1.0
                lines.append(f"{index + 1},{g},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},{conf:.3f},-1,-1,-1\n")
        if unlabelled:
            log.info("camera %s: %d short tracks never received an identity and are left out", cam, len(unlabelled))
        path = out_dir / f"{cam}.txt"
        path.write_text("".join(lines))
        written.append(path)
        frames[cam] = frame_ranges([i + 1 for i in sorted(boxes)])
    (out_dir / FRAMES_FILE).write_text(json.dumps(frames))
    return [*written, out_dir / FRAMES_FILE]


def raw_tracks(run_dir: Path, camera_ids: Iterable[str],
               max_missed: Mapping[str, int] | None = None) -> dict[str, MotSequence]:
    """Every camera's tracked boxes labelled with the per-camera track ids, before any cross-camera linking (ids
    made unique across cameras: camera k's track t is ``k * 10**9 + t``), by 1-based frame; for
    :func:`pipeline.evaluate_mtmc.loss_breakdown`. ``max_missed`` as in :func:`write_tracks`, per track."""
    out = {}
    for k, cam in enumerate(camera_ids, 1):
        seq = MotSequence()
        boxes = read_track_log(run_dir, cam)
        if max_missed and max_missed.get(cam):
            boxes = fill_gaps(boxes, int, max_missed[cam])
        for index, rows in boxes.items():
            if not rows:
                continue
            a = np.asarray([r[:5] for r in rows], dtype=np.float64)
            seq.ids[index + 1] = a[:, 0].astype(np.int64) + k * 10**9
            seq.boxes[index + 1] = np.concatenate([a[:, 1:3], a[:, 3:5] - a[:, 1:3]], axis=1)
        out[cam] = seq
    return out
