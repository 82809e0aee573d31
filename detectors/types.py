"""What the detect+track stage hands on: detections per frame, and track events with their crops.

``Detections`` is checked in ``__post_init__`` (supervision-style) so a wrong shape or dtype fails where the
arrays are made, naming the field, instead of deep inside the tracker or the message encoder.
``TrackCrop`` is one event of a track's life; its ``crop`` is a numpy *view* into the frame until
``materialized()`` copies it for sending (the frame is read-only to this stage, and most crops never leave it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np


class DetectionsError(ValueError):
    """Arrays of the wrong shape or dtype for ``Detections``; the message names the field."""


def _check(name: str, value: object, dtype: type, shape: tuple[int | None, ...]) -> None:
    if not isinstance(value, np.ndarray):
        raise DetectionsError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise DetectionsError(f"{name} must be {np.dtype(dtype).name}, got {value.dtype.name}")
    if value.ndim != len(shape) or any(w is not None and g != w for g, w in zip(value.shape, shape, strict=True)):
        want_s = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise DetectionsError(f"{name} must have shape {want_s}, got {value.shape}")


@dataclass
class Detections:
    """People found in one frame: ``xyxy`` float32 (N, 4) in pixels, ``conf`` float32 (N,), ``track_id`` int64 (N,)."""

    xyxy: np.ndarray
    conf: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check("xyxy", self.xyxy, np.float32, (None, 4))
        n = len(self.xyxy)
        _check("conf", self.conf, np.float32, (n,))
        if self.track_id is not None:
            _check("track_id", self.track_id, np.int64, (n,))

    @classmethod
    def from_arrays(cls, xyxy, conf, track_id=None) -> Detections:
        """Build from anything array-like, casting to the declared dtypes (shapes are still checked)."""
        xyxy = np.asarray(xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        conf = np.asarray(conf, dtype=np.float32).reshape(-1)
        tid = None if track_id is None else np.asarray(track_id, dtype=np.int64).reshape(-1)
        return cls(xyxy, conf, tid)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> Detections:
        """Select rows with an int array, a boolean mask or a slice; always returns ``Detections``."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        tid = None if self.track_id is None else self.track_id[index]
        return Detections(self.xyxy[index], self.conf[index], tid)


class TrackState(StrEnum):
    """Life cycle of a per-camera track, as the next stages see it.

    STARTED: first output of a confirmed track. ACTIVE: tracked again (a better crop, or found again after
    LOST). LOST: the tracker lost it but may still re-find it. ENDED: removed (lost longer than the tracker's
    buffer) or the stream ended; the track id is never reused on that camera.
    """

    STARTED = "started"
    ACTIVE = "active"
    LOST = "lost"
    ENDED = "ended"


VERDICTS = ("small", "aspect", "edge", "blur")


@dataclass(frozen=True)
class TrackCrop:
    """One track event; carries a crop to embed, or ``crop=None`` for a state-only event.

    ``frame_index``/``ts`` (video or capture time, seconds) and ``xyxy``/``conf`` describe the frame the crop was
    taken from (``xyxy`` is the detection's box; the crop may extend it by the tracker's context padding); for
    state-only events they are the event's frame and the track's last box. ``quality`` is in
    [0, 1]; ``verdicts`` name what is wrong with the crop (a subset of ``VERDICTS``; empty = good).
    """

    camera_id: str
    track_id: int
    state: TrackState
    frame_index: int
    ts: float
    xyxy: np.ndarray
    conf: float
    quality: float
    verdicts: tuple[str, ...] = ()
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def has_crop(self) -> bool:
        return self.crop is not None and self.crop.size > 0

    @property
    def is_view(self) -> bool:
        """True while ``crop`` still shares memory with a frame (``materialized()`` makes it own its pixels)."""
        return self.crop is not None and self.crop.base is not None

    def materialized(self) -> TrackCrop:
        """The same event with its crop copied into its own C-contiguous buffer: call this just before sending."""
        if self.crop is None or (not self.is_view and self.crop.flags.c_contiguous):
            return self
        return replace(self, crop=np.array(self.crop, order="C", copy=True))


def within_roi(dets: Detections, roi: Sequence[float] | None) -> Detections:
    """The detections whose box centre lies in ``roi`` (x1, y1, x2, y2 in pixels; None: all of them)."""
    if roi is None or not len(dets):
        return dets
    cx = (dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2
    cy = (dets.xyxy[:, 1] + dets.xyxy[:, 3]) / 2
    return dets[(cx >= roi[0]) & (cx < roi[2]) & (cy >= roi[1]) & (cy < roi[3])]
