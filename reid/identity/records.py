"""What an identity is, and its Redis record: :class:`TrackRef`, :class:`Identity`, encode/decode.

Why apart from the store: the matcher, the gallery and the rules all work on these records, and only the store
talks to Redis; a record that cannot be decoded is a :class:`CorruptRecord`, which the store logs and skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

RECORD_FORMAT = "1"

# What a decision about a track says (reid.identity.tracker), and the kinds of the events the product publishes:
# an identity founded, joined where it was last seen, joined after it was last seen in another camera; a track ended.
NEW, SEEN, MOVED, ENDED = "identity.new", "identity.seen", "identity.moved", "track.ended"
CORRECTED = "identity.corrected"  # a placed track moved to another identity: later evidence proved the first wrong
SPLIT = "track.split"  # a track swapped people at a crossing: its later sightings go on as a part with its own id


class CorruptRecord(ValueError):
    """An identity record that cannot be decoded (missing field, wrong size, not finite); the message says which."""


@dataclass(frozen=True)
class TrackRef:
    """One per-camera track as an identity remembers it: enough for the co-occurrence and travel-time checks."""

    camera_id: str
    track_id: int
    start_ts: float
    end_ts: float
    num_crops: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.camera_id, self.track_id)


@dataclass
class Identity:
    """A global identity: a few diverse unit prototypes (K, D) with their evidence weights, and its history."""

    global_id: int
    prototypes: np.ndarray  # (K, D) float32, unit rows
    weights: np.ndarray  # (K,) float32, evidence (quality x crops) merged into each prototype
    first_seen_ts: float
    last_seen_ts: float
    last_camera: str
    num_tracks: int
    num_crops: int
    tracks: list[TrackRef] = field(default_factory=list)  # most recent tracks, oldest first
    founder: tuple[str, int] = ("", -1)  # (camera_id, track_id) of the track that founded it
    rev: int = 1  # bumped on every write; workers compare it with the change log

    def __post_init__(self) -> None:
        p = self.prototypes
        if p.ndim != 2 or p.shape[0] < 1 or p.dtype != np.float32:
            raise ValueError(f"Identity {self.global_id}: prototypes must be float32 (K>=1, D), got {p.dtype} "
                             f"{p.shape}")
        if self.weights.shape != (p.shape[0],):
            raise ValueError(f"Identity {self.global_id}: weights shape {self.weights.shape} != ({p.shape[0]},)")

    def copy(self) -> Identity:
        return replace(self, prototypes=self.prototypes.copy(), weights=self.weights.copy(), tracks=list(self.tracks))


def encode_identity(ident: Identity) -> dict[str, bytes | str]:
    """Hash fields of an identity record: prototypes as little-endian float32 bytes, history as JSON."""
    return {
        "format": RECORD_FORMAT,
        "dim": str(ident.prototypes.shape[1]),
        "num_prototypes": str(ident.prototypes.shape[0]),
        "protos": np.ascontiguousarray(ident.prototypes, dtype="<f4").tobytes(),
        "weights": np.ascontiguousarray(ident.weights, dtype="<f4").tobytes(),
        "first_seen_ts": repr(float(ident.first_seen_ts)),
        "last_seen_ts": repr(float(ident.last_seen_ts)),
        "last_camera": ident.last_camera,
        "num_tracks": str(ident.num_tracks),
        "num_crops": str(ident.num_crops),
        "tracks": json.dumps([[t.camera_id, t.track_id, t.start_ts, t.end_ts, t.num_crops] for t in ident.tracks]),
        "founder": json.dumps(list(ident.founder)),
        "rev": str(ident.rev),
    }


def decode_identity(global_id: int, raw: dict[bytes, bytes], dim: int, max_prototypes: int) -> Identity:
    """Inverse of :func:`encode_identity`; anything unexpected raises :class:`CorruptRecord` naming the field."""
    if not raw:
        raise CorruptRecord(f"identity {global_id}: empty record")

    def get(name: str) -> bytes:
        try:
            return raw[name.encode()]
        except KeyError:
            raise CorruptRecord(f"identity {global_id}: field {name!r} missing") from None

    try:
        if get("format").decode() != RECORD_FORMAT:
            raise CorruptRecord(f"identity {global_id}: record format {get('format')!r}, expected {RECORD_FORMAT}")
        d, k = int(get("dim")), int(get("num_prototypes"))
        if d != dim:
            raise CorruptRecord(f"identity {global_id}: embedding dim {d}, the matcher uses {dim}")
        if not 1 <= k <= max_prototypes:
            raise CorruptRecord(f"identity {global_id}: {k} prototypes, expected 1..{max_prototypes}")
        protos, weights = get("protos"), get("weights")
        if len(protos) != k * d * 4 or len(weights) != k * 4:
            raise CorruptRecord(f"identity {global_id}: prototypes are {len(protos)} bytes and weights "
                                f"{len(weights)} bytes, expected {k * d * 4} and {k * 4} for ({k}, {d}) float32")
        p = np.frombuffer(protos, dtype="<f4").reshape(k, d).astype(np.float32)
        w = np.frombuffer(weights, dtype="<f4").astype(np.float32)
        if not (np.isfinite(p).all() and np.isfinite(w).all()):
            raise CorruptRecord(f"identity {global_id}: prototypes or weights not finite")
        norms = np.linalg.norm(p, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            raise CorruptRecord(f"identity {global_id}: prototypes are not unit vectors (norms {norms.min():.3g}"
                                f"..{norms.max():.3g})")
        tracks = [TrackRef(str(c), int(t), float(s), float(e), int(n)) for c, t, s, e, n in json.loads(get("tracks"))]
        founder = json.loads(get("founder"))
        return Identity(
            global_id=global_id, prototypes=p, weights=w,
            first_seen_ts=float(get("first_seen_ts")), last_seen_ts=float(get("last_seen_ts")),
            last_camera=get("last_camera").decode(), num_tracks=int(get("num_tracks")),
            num_crops=int(get("num_crops")), tracks=tracks, founder=(str(founder[0]), int(founder[1])),
            rev=int(get("rev")),
        )
    except CorruptRecord:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, IndexError) as e:
        raise CorruptRecord(f"identity {global_id}: unreadable field ({e})") from e
