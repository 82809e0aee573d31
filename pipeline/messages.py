"""Messages on the ZeroMQ seams: a msgpack header frame followed by raw numpy buffers. No pickle.

A message is ``[header, buf0, buf1, ...]``; the header is a msgpack map with ``type``, ``v`` (schema
version) and a ``bufs`` list describing each buffer (dtype, shape). Decoding checks every field, size and
dtype against an allow-list before touching the buffers, so a malformed or hostile message from a foreign
client is rejected with :class:`MessageError` (and counted by the stage) instead of crashing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_BUFFER_BYTES = 64 * 1024 * 1024
ALLOWED_DTYPES = frozenset({"uint8", "float32", "float64", "int64", "int32"})

FRAME = "frame"
CROPS = "crops"
EMBEDDINGS = "embeddings"
END = "end"  # end of a camera's stream: every stage flushes that camera and passes it on
TYPES = frozenset({FRAME, CROPS, EMBEDDINGS, END})


class MessageError(ValueError):
    """A message that does not decode to a valid, known message."""


@dataclass
class Message:
    """A decoded message: its header fields and its arrays, in order."""

    type: str
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.header[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.header.get(key, default)


def encode(type_: str, header: dict[str, Any], arrays: list[np.ndarray] | tuple = ()) -> list[bytes | memoryview]:
    """Frames for ``socket.send_multipart``; arrays are sent without copying when contiguous."""
    if type_ not in TYPES:
        raise MessageError(f"unknown message type {type_!r}")
    bufs, meta = [], []
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.name not in ALLOWED_DTYPES:
            raise MessageError(f"dtype {a.dtype} is not allowed on the wire")
        meta.append([a.dtype.name, list(a.shape)])
        bufs.append(memoryview(a).cast("B") if a.size else b"")
    head = msgpack.packb({**header, "type": type_, "v": VERSION, "bufs": meta}, use_bin_type=True)
    return [head, *bufs]


def decode(frames: list[bytes | memoryview]) -> Message:
    """Parse frames from ``socket.recv_multipart``, validating everything before use."""
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
    if type_ not in TYPES:
        raise MessageError(f"unknown message type {type_!r}")
    if version != VERSION:
        raise MessageError(f"unsupported message version {version!r} (expected {VERSION})")
    if not isinstance(meta, list) or len(meta) != len(frames) - 1:
        raise MessageError(f"header describes {len(meta) if isinstance(meta, list) else '?'} buffers, "
                           f"message carries {len(frames) - 1}")
    arrays = []
    for i, (m, buf) in enumerate(zip(meta, frames[1:], strict=True)):
        if not (isinstance(m, list) and len(m) == 2 and m[0] in ALLOWED_DTYPES and isinstance(m[1], list)
                and all(isinstance(d, int) and 0 <= d < 2**31 for d in m[1]) and len(m[1]) <= 4):
            raise MessageError(f"buffer {i}: invalid description {m!r}")
        dtype = np.dtype(m[0])
        expected = int(np.prod(m[1], dtype=np.int64)) * dtype.itemsize
        if expected > MAX_BUFFER_BYTES:
            raise MessageError(f"buffer {i}: {expected} bytes exceeds {MAX_BUFFER_BYTES}")
        if len(buf) != expected:
            raise MessageError(f"buffer {i}: {len(buf)} bytes, header says {expected} for {m[0]}{m[1]}")
        arrays.append(np.frombuffer(buf, dtype=dtype).reshape(m[1]) if expected else np.zeros(m[1], dtype))
    return Message(type_, header, arrays)
