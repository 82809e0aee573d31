"""Messages on the ZeroMQ seams: one frozen dataclass per kind, on the wire a msgpack header and raw numpy buffers.

Kinds, in pipeline order: :class:`FrameMsg` (source -> detect), :class:`CropsMsg` (detect -> embed),
:class:`EmbeddingsMsg` (embed -> match) and :class:`EndMsg` (a camera's stream is over; every stage flushes that
camera and passes it on). :class:`CropsMsg` and :class:`EmbeddingsMsg` carry the frame's :class:`TrackEntry` rows.

Each class checks its fields in ``__post_init__`` and raises :class:`MessageError` naming the field and the shape
it got, so a stage that builds a wrong message fails where it builds it, and a malformed or hostile message from
a foreign client fails in :func:`decode`, which the stage counts and drops, instead of deep inside a stage.

Wire format (:func:`encode` and :func:`decode`, the only code that knows it): ``[header, buf0, buf1, ...]``; the
header is a msgpack map with ``type``, ``v`` (schema version), ``bufs`` (dtype and shape of each buffer) and the
message's scalar fields; arrays travel as raw buffers, without copies when contiguous. No pickle: decoding checks
the header's size, every buffer's dtype against an allow-list and its size against a limit before touching it.
Boxes are ``xyxy`` pixels; track states are :class:`detectors.types.TrackState` values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from detectors.types import VERDICTS, TrackState

VERSION = 2  # 2: typed messages (track entries' ``row``, optional JPEG buffers in embeddings)
MAX_HEADER_BYTES = 64 * 1024
MAX_BUFFER_BYTES = 64 * 1024 * 1024
ALLOWED_DTYPES = frozenset({"uint8", "float32", "float64", "int64", "int32"})
MAX_CAMERA_ID_CHARS = 256

FRAME = "frame"
CROPS = "crops"
EMBEDDINGS = "embeddings"
END = "end"
TYPES = frozenset({FRAME, CROPS, EMBEDDINGS, END})


class MessageError(ValueError):
    """A message that does not decode to, or a field that does not make, a valid message; the text names the field."""


# -- field checks -----------------------------------------------------------------------------------------------------


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise MessageError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _float(name: str, value: Any) -> float:
    """A finite float (ints accepted): a NaN or infinite time or box would poison ordering and events downstream."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise MessageError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise MessageError(f"{name} must be finite, got {value}")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise MessageError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _camera_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CAMERA_ID_CHARS:
        got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise MessageError(f"camera_id must be a string of 1 to {MAX_CAMERA_ID_CHARS} characters, got {got}")
    return value


def _shape_text(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _array(name: str, value: Any, dtype: str, shape: Sequence[int | str]) -> np.ndarray:
    """``value`` as an array of ``dtype`` and ``shape``; a ``str`` in ``shape`` names a free dimension (N, H, W)."""
    want = f"a {_shape_text(shape)} {dtype} array"
    if not isinstance(value, np.ndarray):
        raise MessageError(f"{name} must be {want}, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype) or value.ndim != len(shape) or any(
            isinstance(w, int) and g != w for g, w in zip(value.shape, shape, strict=True)):
        got = _shape_text(value.shape) + ("" if value.dtype == np.dtype(dtype) else f" {value.dtype.name}")
        raise MessageError(f"{name} must be {want}, got {got}")
    return value


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a field of a frozen dataclass in __post_init__


def _stream_fields(msg: FrameMsg | CropsMsg | EmbeddingsMsg) -> None:
    """The fields every per-frame message has: where and when it was seen."""
    _set(msg, "camera_id", _camera_id(msg.camera_id))
    _set(msg, "frame_index", _int("frame_index", msg.frame_index))
    _set(msg, "ts", _float("ts", msg.ts))
    _set(msg, "wall_ts", _float("wall_ts", msg.wall_ts))
    _set(msg, "live", _bool("live", msg.live))


def _track_rows(msg: CropsMsg | EmbeddingsMsg, rows: int, what: str) -> None:
    if not isinstance(msg.tracks, Sequence) or isinstance(msg.tracks, str | bytes):
        raise MessageError(f"tracks must be a sequence of TrackEntry, got {type(msg.tracks).__name__}")
    tracks = tuple(msg.tracks)
    for i, t in enumerate(tracks):
        if not isinstance(t, TrackEntry):
            raise MessageError(f"tracks[{i}] must be a TrackEntry, got {type(t).__name__}")
        if t.row >= rows:
            raise MessageError(f"tracks[{i}].row is {t.row}, but the message carries {rows} {what}")
    _set(msg, "tracks", tracks)


# -- messages ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackEntry:
    """One event of a per-camera track in one frame (see :class:`detectors.types.TrackCrop`).

    ``track_id`` is the detect stage's global track id; ``xyxy`` the detection's box in pixels; ``row`` the
    index of the entry's crop in :attr:`CropsMsg.crops`, then of its embedding in
    :attr:`EmbeddingsMsg.embeddings` (the embed stage renumbers it), or -1 for a state-only event or a crop that
    could not be embedded.
    """

    track_id: int
    state: TrackState
    frame_index: int
    ts: float
    xyxy: tuple[float, float, float, float]
    conf: float
    quality: float
    verdicts: tuple[str, ...] = ()
    row: int = -1

    def __post_init__(self) -> None:
        _set(self, "track_id", _int("track_id", self.track_id))
        try:
            _set(self, "state", TrackState(self.state))
        except ValueError:
            raise MessageError(f"state must be one of {[s.value for s in TrackState]}, got {self.state!r}") from None
        _set(self, "frame_index", _int("frame_index", self.frame_index))
        _set(self, "ts", _float("ts", self.ts))
        box = self.xyxy
        if not isinstance(box, Sequence | np.ndarray) or isinstance(box, str | bytes) or len(box) != 4:
            got = f"{len(box)} values" if isinstance(box, Sequence | np.ndarray) else type(box).__name__
            raise MessageError(f"xyxy must be 4 numbers (x1, y1, x2, y2), got {got}")
        _set(self, "xyxy", tuple(_float(f"xyxy[{i}]", v) for i, v in enumerate(box)))
        _set(self, "conf", _float("conf", self.conf))
        _set(self, "quality", _float("quality", self.quality))
        if not 0.0 <= self.quality <= 1.0:  # the matcher weighs crops by it: a negative weight would crash it
            raise MessageError(f"quality must be in [0, 1], got {self.quality}")
        if not isinstance(self.verdicts, Sequence) or isinstance(self.verdicts, str | bytes) or any(
                v not in VERDICTS for v in self.verdicts):
            raise MessageError(f"verdicts must be a sequence of {VERDICTS}, got {self.verdicts!r}")
        _set(self, "verdicts", tuple(self.verdicts))
        _set(self, "row", _int("row", self.row))
        if self.row < -1:
            raise MessageError(f"row must be -1 (none) or an index, got {self.row}")


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays do not compare with ==
class FrameMsg:
    """A camera's frame (source -> detect): BGR uint8 pixels, its index in the source and its time (video time
    in replay, capture time live); ``live`` frames may be skipped by a detector that is behind."""

    camera_id: str
    frame_index: int
    ts: float
    frame: np.ndarray = field(repr=False)
    wall_ts: float = field(default_factory=time.time)
    live: bool = False

    def __post_init__(self) -> None:
        _stream_fields(self)
        _array("frame", self.frame, "uint8", ("H", "W", 3))
        if not self.frame.size:
            raise MessageError(f"frame must not be empty, got {_shape_text(self.frame.shape)}")


@dataclass(frozen=True, eq=False)
class CropsMsg:
    """One processed frame's track events (detect -> embed), with the crops the selector chose to embed.

    ``crops`` are only checked to be arrays: a crop that is no image is the embed stage's to drop and count,
    while the other crops and every track state of the frame still go on.
    """

    camera_id: str
    frame_index: int
    ts: float
    tracks: tuple[TrackEntry, ...]
    crops: tuple[np.ndarray, ...] = field(default=(), repr=False)
    wall_ts: float = field(default_factory=time.time)
    live: bool = False

    def __post_init__(self) -> None:
        _stream_fields(self)
        if not isinstance(self.crops, Sequence):
            raise MessageError(f"crops must be a sequence of arrays, got {type(self.crops).__name__}")
        for i, c in enumerate(self.crops):
            if not isinstance(c, np.ndarray):
                raise MessageError(f"crops[{i}] must be a numpy array, got {type(c).__name__}")
        _set(self, "crops", tuple(self.crops))
        _track_rows(self, len(self.crops), "crops")


@dataclass(frozen=True, eq=False)
class EmbeddingsMsg:
    """One processed frame's track events with their embeddings (embed -> match).

    ``jpegs`` holds one small JPEG per embedding row (``b""`` where a crop could not be encoded) when images are
    kept: ``gallery.store_crops`` (on by default: the identities' thumbnails) or ``events_include_crops``; None when
    both are off, and then no image data travels past the embed stage.
    """

    camera_id: str
    frame_index: int
    ts: float
    tracks: tuple[TrackEntry, ...]
    embeddings: np.ndarray = field(repr=False)
    jpegs: tuple[bytes, ...] | None = field(default=None, repr=False)
    wall_ts: float = field(default_factory=time.time)
    live: bool = False

    def __post_init__(self) -> None:
        _stream_fields(self)
        _array("embeddings", self.embeddings, "float32", ("N", "D"))
        n = len(self.embeddings)
        if self.jpegs is not None:
            if not isinstance(self.jpegs, Sequence) or len(self.jpegs) != n or not all(
                    isinstance(j, bytes) for j in self.jpegs):
                got = f"{len(self.jpegs)} items" if isinstance(self.jpegs, Sequence) else type(self.jpegs).__name__
                raise MessageError(f"jpegs must be None or one bytes per embedding row ({n}), got {got}")
            _set(self, "jpegs", tuple(self.jpegs))
        _track_rows(self, n, "embeddings")


@dataclass(frozen=True)
class EndMsg:
    """The end of a camera's stream: every stage flushes that camera and passes this on."""

    camera_id: str

    def __post_init__(self) -> None:
        _set(self, "camera_id", _camera_id(self.camera_id))


Msg = FrameMsg | CropsMsg | EmbeddingsMsg | EndMsg


# -- wire format ------------------------------------------------------------------------------------------------------

_TRACK_FIELDS = ("track_id", "state", "frame_index", "ts", "xyxy", "conf", "quality", "verdicts", "row")


def _track_to_wire(t: TrackEntry) -> dict[str, Any]:
    return {"track_id": t.track_id, "state": t.state.value, "frame_index": t.frame_index, "ts": t.ts,
            "xyxy": list(t.xyxy), "conf": t.conf, "quality": t.quality, "verdicts": list(t.verdicts), "row": t.row}


def _track_from_wire(i: int, raw: Any) -> TrackEntry:
    if not isinstance(raw, dict):
        raise MessageError(f"tracks[{i}] must be a map, got {type(raw).__name__}")
    missing = [k for k in _TRACK_FIELDS if k not in raw]
    if missing:
        raise MessageError(f"tracks[{i}] lacks {missing}")
    try:
        return TrackEntry(**{k: raw[k] for k in _TRACK_FIELDS})
    except MessageError as e:
        raise MessageError(f"tracks[{i}].{e}") from None


def _stream_header(msg: FrameMsg | CropsMsg | EmbeddingsMsg) -> dict[str, Any]:
    return {"camera_id": msg.camera_id, "frame_index": msg.frame_index, "ts": msg.ts, "wall_ts": msg.wall_ts,
            "live": msg.live}


def _to_wire(msg: Msg) -> tuple[str, dict[str, Any], list[np.ndarray]]:
    if isinstance(msg, FrameMsg):
        return FRAME, _stream_header(msg), [msg.frame]
    if isinstance(msg, CropsMsg):
        return CROPS, {**_stream_header(msg), "tracks": [_track_to_wire(t) for t in msg.tracks]}, list(msg.crops)
    if isinstance(msg, EmbeddingsMsg):
        jpegs = [np.frombuffer(j, np.uint8) for j in msg.jpegs] if msg.jpegs is not None else []
        header = {**_stream_header(msg), "tracks": [_track_to_wire(t) for t in msg.tracks],
                  "jpegs": msg.jpegs is not None}
        return EMBEDDINGS, header, [msg.embeddings, *jpegs]
    if isinstance(msg, EndMsg):
        return END, {"camera_id": msg.camera_id}, []
    raise MessageError(f"not a message: {type(msg).__name__}")


def _from_wire(type_: str, header: dict[str, Any], arrays: list[np.ndarray]) -> Msg:
    """Build the message from a checked header and buffers; a missing field or a bad value is a MessageError."""
    def get(key: str) -> Any:
        if key not in header:
            raise MessageError(f"{type_} message lacks {key!r}")
        return header[key]

    if type_ == END:
        return EndMsg(get("camera_id"))
    stream = {k: get(k) for k in ("camera_id", "frame_index", "ts", "wall_ts", "live")}
    if type_ == FRAME:
        if len(arrays) != 1:
            raise MessageError(f"a frame message carries 1 buffer, got {len(arrays)}")
        return FrameMsg(frame=arrays[0], **stream)
    raw_tracks = get("tracks")
    if not isinstance(raw_tracks, list):
        raise MessageError(f"tracks must be a list, got {type(raw_tracks).__name__}")
    tracks = tuple(_track_from_wire(i, t) for i, t in enumerate(raw_tracks))
    if type_ == CROPS:
        return CropsMsg(tracks=tracks, crops=tuple(arrays), **stream)
    with_jpegs = _bool("jpegs", get("jpegs"))
    if not arrays:
        raise MessageError("an embeddings message carries its embeddings buffer, got no buffer")
    embeddings, rest = arrays[0], arrays[1:]
    if not with_jpegs and rest:
        raise MessageError(f"an embeddings message without jpegs carries 1 buffer, got {len(arrays)}")
    jpegs = None
    if with_jpegs:
        jpegs = tuple(_array(f"jpegs[{i}]", j, "uint8", ("L",)).tobytes() for i, j in enumerate(rest))
    return EmbeddingsMsg(tracks=tracks, embeddings=embeddings, jpegs=jpegs, **stream)


def encode(msg: Msg) -> list[bytes | memoryview]:
    """Frames for ``socket.send_multipart``; arrays are sent without copying when contiguous."""
    type_, header, arrays = _to_wire(msg)
    bufs, meta = [], []
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.name not in ALLOWED_DTYPES:
            raise MessageError(f"dtype {a.dtype} is not allowed on the wire")
        meta.append([a.dtype.name, list(a.shape)])
        bufs.append(memoryview(a).cast("B") if a.size else b"")
    head = msgpack.packb({**header, "type": type_, "v": VERSION, "bufs": meta}, use_bin_type=True)
    return [head, *bufs]


def decode(frames: list[bytes | memoryview]) -> Msg:
    """Parse frames from ``socket.recv_multipart``, validating everything before use; raises MessageError."""
    if not frames:
        raise MessageError("empty message")
    head = frames[0]
    if len(head) > MAX_HEADER_BYTES:
        raise MessageError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(bytes(head), raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated exception types on garbage
        raise MessageError(f"header is not valid msgpack ({type(e).__name__})") from e
    if not isinstance(header, dict):
        raise MessageError("header is not a map")
    type_, version, meta = header.pop("type", None), header.pop("v", None), header.pop("bufs", None)
    if not isinstance(type_, str) or type_ not in TYPES:
        raise MessageError(f"unknown message type {type_!r}")
    if version != VERSION:
        raise MessageError(f"unsupported message version {version!r} (expected {VERSION})")
    if not isinstance(meta, list) or len(meta) != len(frames) - 1:
        raise MessageError(f"header describes {len(meta) if isinstance(meta, list) else '?'} buffers, "
                           f"message carries {len(frames) - 1}")
    arrays = []
    for i, (m, buf) in enumerate(zip(meta, frames[1:], strict=True)):
        if not (isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and m[0] in ALLOWED_DTYPES
                and isinstance(m[1], list) and all(isinstance(d, int) and 0 <= d < 2**31 for d in m[1])
                and len(m[1]) <= 4):
            raise MessageError(f"buffer {i}: invalid description {m!r}")
        dtype = np.dtype(m[0])
        expected = math.prod(m[1]) * dtype.itemsize  # Python ints: a forged shape cannot overflow to 0
        if expected > MAX_BUFFER_BYTES:
            raise MessageError(f"buffer {i}: {expected} bytes exceeds {MAX_BUFFER_BYTES}")
        if len(buf) != expected:
            raise MessageError(f"buffer {i}: {len(buf)} bytes, header says {expected} for {m[0]}{m[1]}")
        arrays.append(np.frombuffer(buf, dtype=dtype).reshape(m[1]) if expected else np.zeros(m[1], dtype))
    return _from_wire(type_, header, arrays)
