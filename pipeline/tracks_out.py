"""``--tracks-out``: every camera's tracked boxes as MOTChallenge files labelled with final global identities.

Written after the run from the detect stage's track logs (every box on every frame the detector ran on) and
the identity events (which global identity each track was given), in the format of ``docs/tracks.md``:
``frame,global_id,x,y,w,h,conf,-1,-1,-1`` with frame = video frame index + 1. Tracks that never received an
identity (too short to be matched) are left out and counted. ``frames.json`` lists the frames the detector ran
on, so ``python -m pipeline.evaluate_mtmc`` scores exactly those.

With a :class:`pipeline.gaps.GapFiller`, the frames a person was missed on while the pipeline knew they were
there get a box with confidence 0 (``pipeline.gaps``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from pipeline.evaluate_mtmc import FRAMES_FILE, MotSequence, frame_ranges
from pipeline.events import track_identities, track_parts
from pipeline.gaps import GapFiller, Rows, TrackLog, fill_gaps

log = logging.getLogger(__name__)


def _records(run_dir: Path, camera_id: str) -> Iterator[dict]:
    for path in sorted((run_dir / "tracks").glob(f"{camera_id}.*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed process


def read_track_log(run_dir: Path, camera_id: str,
                   parts: Mapping[tuple[str, int], tuple[int, int]] | None = None) -> TrackLog:
    """A camera's track log (every box on every frame the detector ran on), in one pass over its files: frame
    index -> rows ``[track_id, x1, y1, x2, y2, conf]``, and frame index -> video time. With ``parts``
    (:func:`pipeline.events.track_parts`), a row of a track split at a swap carries its part's id from the part's
    first frame on, as the identity events do."""
    boxes: dict[int, Rows] = {}
    times: dict[int, float] = {}
    for rec in _records(run_dir, camera_id):
        frame = int(rec["f"])
        rows = rec["t"]
        if parts:
            rows = [[_part_of(parts, camera_id, int(r[0]), frame), *r[1:]] for r in rows]
        boxes.setdefault(frame, []).extend(rows)
        times[frame] = float(rec["ts"])
    return TrackLog(boxes, times)


def _part_of(parts: Mapping[tuple[str, int], tuple[int, int]], camera_id: str, track_id: int, frame: int) -> int:
    """The id a track's row of ``frame`` is reported under: its own, or that of the part it was split into."""
    while (split := parts.get((camera_id, track_id))) is not None and frame >= split[0]:
        track_id = split[1]
    return track_id


def write_tracks(run_dir: Path, camera_ids: Iterable[str], events: Iterable[dict], out_dir: Path,
                 filler: GapFiller | None = None) -> list[Path]:
    """One ``<camera>.txt`` per camera and ``frames.json`` in ``out_dir``; returns the files written. With
    ``filler``, each global identity's gaps are filled; the detected boxes alone without it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events = list(events)
    gid, parts = track_identities(events), track_parts(events)
    frames: dict[str, list[list[int]]] = {}
    written = []
    camera_ids = list(camera_ids)
    logs = {cam: read_track_log(run_dir, cam, parts) for cam in camera_ids}
    for cam in camera_ids:
        boxes = logs[cam].boxes
        if filler is not None:
            boxes = filler.fill(cam, logs, lambda c, t: gid.get((c, t)))
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


def raw_tracks(run_dir: Path, camera_ids: Iterable[str], filler: GapFiller | None = None,
               parts: Mapping[tuple[str, int], tuple[int, int]] | None = None) -> dict[str, MotSequence]:
    """Every camera's tracked boxes labelled with the per-camera track ids, before any cross-camera linking (ids
    made unique across cameras: camera k's track t is ``k * 10**12 + t``), by 1-based frame; for
    :func:`pipeline.evaluate_mtmc.loss_breakdown`. With ``filler``, each track's own gaps within the tracker's buffer
    are filled (what a track alone knows); with ``parts`` (:func:`pipeline.events.track_parts`), tracks split at a
    swap are split (the tracks the identity stage links)."""
    out = {}
    for k, cam in enumerate(camera_ids, 1):
        seq = MotSequence()
        boxes = read_track_log(run_dir, cam, parts).boxes
        if filler is not None:
            boxes = fill_gaps(boxes, int, filler.views[cam].max_missed)
        for index, rows in boxes.items():
            if not rows:
                continue
            a = np.asarray([r[:5] for r in rows], dtype=np.float64)
            seq.ids[index + 1] = a[:, 0].astype(np.int64) + k * 10**12
            seq.boxes[index + 1] = np.concatenate([a[:, 1:3], a[:, 3:5] - a[:, 1:3]], axis=1)
        out[cam] = seq
    return out
