"""Camera snapshots for the web page: each camera's latest frame with its tracked boxes, labelled by global id.

The detect stage knows the boxes and track ids but not the global identities (the match stage decides those,
later, and may never decide a short fragment). So the detect stage writes the clean, downscaled frame with its
boxes and track ids (:class:`SnapshotWriter`, ``RUN/snapshots/<camera>.snap``), and the service draws the labels
when a snapshot is asked for (:func:`render_snapshot`), with the global ids the identity store holds at that
moment: a box is labelled ``#7`` in identity 7's colour (the colours of ``--save-video``), or drawn thin and grey
while its track is not decided yet.

A ``.snap`` file is one msgpack map (``v``, ``camera``, ``frame``, ``ts``, ``jpeg``, ``boxes`` in the JPEG's
pixels, ``tracks``, and ``size``: the camera frame's width and height before downscaling, which the calibration
page needs to turn a click on the JPEG into camera pixels; absent from older files), written to a temporary file
and renamed, so a reader never sees a partial one. One file per camera, rewritten at most once per ``every_s``:
bounded on disk and in time, whatever the frame rate.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import msgpack
import numpy as np

from pipeline.render import identity_colour

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
UNDECIDED = (160, 160, 160)  # BGR: a track the match stage has not assigned yet


class SnapshotError(ValueError):
    """A snapshot file that cannot be read back (truncated, not msgpack, another version)."""


@dataclass(frozen=True)
class Snapshot:
    camera: str
    frame_index: int
    ts: float  # video time of the frame, seconds
    jpeg: bytes  # the clean frame, at most ``SnapshotWriter.MAX_WIDTH`` px wide
    boxes: np.ndarray  # (N, 4) xyxy in the JPEG's pixels
    track_ids: list[int]  # the ids the match stage knows the tracks by (the detect stage's global track ids)
    frame_size: tuple[int, int] | None = None  # (width, height) of the camera's frame; None in older files


class SnapshotWriter:
    """Each camera's latest frame and tracks as ``<folder>/<camera>.snap``, at most once per ``every_s`` (wall
    time), downscaled to at most ``MAX_WIDTH`` px."""

    MAX_WIDTH = 480

    def __init__(self, folder: Path, every_s: float) -> None:
        self.folder = folder
        self.every_s = every_s
        self.last: dict[str, float] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def due(self, cam: str) -> bool:
        """The camera's last snapshot is ``every_s`` old (ask before preparing a :meth:`write`)."""
        return time.monotonic() - self.last.get(cam, -math.inf) >= self.every_s

    def write(self, cam: str, frame_index: int, ts: float, frame: np.ndarray, boxes: np.ndarray,
              track_ids: Sequence[int]) -> bool:
        """Write this frame as the camera's snapshot (the next is due ``every_s`` from now); True when written."""
        self.last[cam] = time.monotonic()
        scale = min(1.0, self.MAX_WIDTH / frame.shape[1])
        img = frame if scale == 1.0 else cv2.resize(
            frame, (self.MAX_WIDTH, round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if not ok:
            return False
        scaled = np.round(np.asarray(boxes, np.float32).reshape(-1, 4) * scale, 1)
        payload = msgpack.packb({"v": SNAPSHOT_VERSION, "camera": cam, "frame": int(frame_index), "ts": float(ts),
                                 "jpeg": buf.tobytes(), "boxes": scaled.tolist(),
                                 "tracks": [int(t) for t in track_ids], "size": [frame.shape[1], frame.shape[0]]})
        tmp = self.folder / f".{cam}.snap.tmp"
        try:
            tmp.write_bytes(payload)
            os.replace(tmp, snapshot_path(self.folder, cam))
        except OSError as e:
            log.warning("camera %s: snapshot not written (%s)", cam, e)
            return False
        return True


def snapshot_folder(run_dir: Path) -> Path:
    """Where the detect stage writes the snapshots of a run and the service reads them."""
    return run_dir / "snapshots"


def snapshot_path(folder: Path, cam: str) -> Path:
    return folder / f"{cam}.snap"


def read_snapshot(path: Path) -> Snapshot:
    """Raises FileNotFoundError when there is none yet, :class:`SnapshotError` when it is unreadable."""
    raw = path.read_bytes()
    try:
        d = msgpack.unpackb(raw)
        if d.get("v") != SNAPSHOT_VERSION:
            raise SnapshotError(f"{path}: snapshot version {d.get('v')!r}, expected {SNAPSHOT_VERSION}")
        boxes = np.asarray(d["boxes"], np.float32).reshape(-1, 4)
        tracks = [int(t) for t in d["tracks"]]
        if len(tracks) != len(boxes):
            raise SnapshotError(f"{path}: {len(boxes)} boxes but {len(tracks)} track ids")
        size = d.get("size")
        frame_size = (int(size[0]), int(size[1])) if size is not None else None
        return Snapshot(str(d["camera"]), int(d["frame"]), float(d["ts"]), bytes(d["jpeg"]), boxes, tracks,
                        frame_size)
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException) as e:
        raise SnapshotError(f"{path}: not a snapshot ({type(e).__name__}: {e})") from None


def render_snapshot(snap: Snapshot, lookup: Callable[[list[tuple[str, int]]], list[int | None]]) -> bytes:
    """The snapshot as a JPEG with every box drawn: labelled ``#gid`` in the identity's colour when ``lookup``
    (camera, track id) -> global id knows the track, thin and grey when it does not (yet)."""
    img = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise SnapshotError(f"camera {snap.camera}: the snapshot's JPEG does not decode")
    gids = lookup([(snap.camera, t) for t in snap.track_ids]) if snap.track_ids else []
    for box, gid in sorted(zip(snap.boxes, gids, strict=True), key=lambda bg: bg[1] is not None):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if gid is None:
            cv2.rectangle(img, (x1, y1), (x2, y2), UNDECIDED, 1)
            continue
        colour = identity_colour(gid)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
        label = f"#{gid}"
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(h + 2, y1)
        cv2.rectangle(img, (x1, ty - h - 3), (x1 + w + 3, ty), colour, -1)
        cv2.putText(img, label, (x1 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise SnapshotError(f"camera {snap.camera}: the annotated snapshot could not be encoded")
    return buf.tobytes()
