"""Cross-camera matching: per-camera tracks in, global identities out.

A track is summarised by one unit embedding, the quality-weighted mean of its best crops
(:func:`aggregate_embeddings`). An identity keeps a few *diverse* prototypes rather than one mean, because one
person looks different from the front and the back, or under two cameras' colour casts; a track's similarity to
an identity is its best cosine over the prototypes.

A batch of tracks is matched jointly (:meth:`Matcher.match`):

1. A track seen before (same ``camera_id`` and ``track_id``) keeps its global id and refreshes the identity.
2. The others are compared with the gallery. A pair is *admissible* when the cosine passes ``threshold`` and the
   identity's history allows it: two tracks visible at the same time in one camera are never one person, and
   with a camera topology the step from the identity's neighbouring sighting must follow a link within its
   travel-time window.
3. Admissible pairs are assigned by the Hungarian method (max total similarity above the threshold; each track
   may instead found a new identity), so tracks that compete for the same identities are solved together rather
   than first-come first-served.
4. An assigned track must beat its best rival by ``margin`` (rivals: admissible identities not taken by another
   track of the same round); otherwise the evidence is ambiguous and it founds a new identity.
5. Rounds repeat, with the histories updated, so tracks from *other* cameras can still join an identity taken
   in an earlier round (overlapping views); when a round assigns nothing, the remaining tracks found identities,
   one per group of mutually similar compatible tracks, and the rest may join those in the next round.

All of this is decided on a local copy of the gallery (a prototype matrix searched by brute force, or an
approximate faiss IVF index when faiss is installed and the gallery is large); the decisions are then written
through the store, whose atomic writes keep several matcher processes consistent (see :mod:`reid.store`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from scipy.optimize import linear_sum_assignment

from reid.store import Identity, IdentityBackend, IdentityStore, RedisConfig, TrackRef

try:  # optional: approximate (IVF) inner-product search for galleries beyond ~1e5 identities
    import faiss  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - faiss is not a dependency
    faiss = None

log = logging.getLogger(__name__)

_BIG = 1e6  # cost of a forbidden pair in the assignment matrix


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------


class CameraLink(BaseModel):
    """A way a person can walk from one camera's view to another's, and how long it takes."""

    model_config = ConfigDict(extra="forbid")

    from_camera: str = Field(description="camera id the person leaves")
    to_camera: str = Field(description="camera id the person enters")
    min_travel_s: float = Field(0.0, ge=0, description="shortest time from leaving from_camera to entering to_camera")
    max_travel_s: float | None = Field(None, gt=0, description="longest such time; unset: no upper bound")
    overlap: bool = Field(False, description="the views overlap: one person may be visible in both at once")
    bidirectional: bool = Field(True, description="the link also leads from to_camera back to from_camera")

    @model_validator(mode="after")
    def _check(self) -> CameraLink:
        if self.from_camera == self.to_camera:
            raise ValueError(f"link {self.from_camera} -> {self.to_camera}: a link joins two different cameras")
        if self.max_travel_s is not None and self.max_travel_s < self.min_travel_s:
            raise ValueError(f"link {self.from_camera} -> {self.to_camera}: max_travel_s {self.max_travel_s} < "
                             f"min_travel_s {self.min_travel_s}")
        return self


class TopologyConfig(BaseModel):
    """Which cameras connect. When given, a person may only move between two cameras along a listed link."""

    model_config = ConfigDict(extra="forbid")

    links: list[CameraLink] = Field(min_length=1, description="the camera links")
    _by_pair: dict[tuple[str, str], CameraLink] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        for link in self.links:
            pairs = [(link.from_camera, link.to_camera)]
            if link.bidirectional:
                pairs.append((link.to_camera, link.from_camera))
            for pair in pairs:
                if pair in self._by_pair:
                    raise ValueError(f"topology: more than one link {pair[0]} -> {pair[1]}")
                self._by_pair[pair] = link

    def link(self, from_camera: str, to_camera: str) -> CameraLink | None:
        return self._by_pair.get((from_camera, to_camera))

    def allows(self, a: TrackRef, b: TrackRef) -> bool:
        """Can one person produce track ``a`` and track ``b`` in two different cameras?"""
        if overlaps(a, b):
            link = self.link(a.camera_id, b.camera_id) or self.link(b.camera_id, a.camera_id)
            return link is not None and link.overlap
        first, second = (a, b) if a.end_ts <= b.start_ts else (b, a)
        link = self.link(first.camera_id, second.camera_id)
        if link is None:
            return False
        gap = second.start_ts - first.end_ts
        return gap >= link.min_travel_s and (link.max_travel_s is None or gap <= link.max_travel_s)


class MatcherConfig(BaseModel):
    """The cross-camera matcher: decision rule, identity model, expiry, search index and the Redis behind it."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(1024, ge=1, description="length of the re-ID embedding (HA-CNN: 1024)")
    threshold: float = Field(
        0.70, ge=-1, le=1, description="cosine similarity a track needs to join an identity (else: new identity). "
        "0.70 with margin 0.03: within 1 point of the best mean IDF1 over the four scenarios of reid.link_bench on "
        "cuhk03_p1 with the shipped weights, with a quarter fewer false merges than the IDF1-best setting"
    )
    margin: float = Field(
        0.03, ge=0, le=2, description="the best identity must beat the best rival by this much cosine, else the "
        "track is ambiguous and founds a new identity"
    )
    assignment: Literal["hungarian", "greedy"] = Field(
        "hungarian", description="joint assignment of a batch (hungarian), or best pair first (greedy, for comparison)"
    )
    max_prototypes: int = Field(4, ge=1, le=64, description="prototypes an identity keeps (diverse appearances)")
    prototype_merge_similarity: float = Field(
        0.9, ge=-1, le=1, description="a track this similar to a prototype is merged into it; a less similar one "
        "becomes a new prototype while fewer than max_prototypes exist"
    )
    crops_per_track: int = Field(8, ge=1, description="aggregate a track from its best N crops by quality")
    max_track_history: int = Field(
        32, ge=1, description="recent tracks an identity remembers for the co-occurrence and travel-time checks"
    )
    expiry_s: float = Field(3600.0, gt=0, description="identities unseen for this long (track time) are deleted")
    expire_every_s: float = Field(10.0, ge=0, description="how often (track time) the matcher runs expiry")
    index: Literal["auto", "numpy", "faiss"] = Field(
        "auto", description="gallery search: numpy brute force (exact), faiss IVF (approximate; optional package), "
        "or auto (faiss when installed and the gallery holds at least faiss_min_identities)"
    )
    faiss_min_identities: int = Field(100_000, ge=1, description="gallery size from which index=auto uses faiss")
    faiss_nprobe: int = Field(
        32, ge=1, description="faiss: inverted lists searched per track (more: better recall, slower)"
    )
    faiss_top_k: int = Field(64, ge=2, description="faiss: prototypes retrieved per track before the threshold")
    topology: TopologyConfig | None = Field(None, description="camera links and travel times; unset: unconstrained")
    redis: RedisConfig = Field(default_factory=RedisConfig, description="where identities are stored")


# ----------------------------------------------------------------------------------------------------------------
# Tracks and embeddings
# ----------------------------------------------------------------------------------------------------------------


def aggregate_embeddings(embs: np.ndarray, qualities: np.ndarray | None = None, top_k: int | None = None) -> np.ndarray:
    """(N, D) crop embeddings -> (D,) unit track embedding: quality-weighted mean of the best ``top_k`` crops.

    Each crop is L2-normalised first, so a crop counts by its quality, not by its embedding's norm. Qualities of
    zero everywhere fall back to equal weights.
    """
    embs = np.asarray(embs, dtype=np.float32)
    if embs.ndim != 2 or len(embs) == 0:
        raise ValueError(f"embs must be (N>=1, D), got shape {embs.shape}")
    q = np.ones(len(embs)) if qualities is None else np.asarray(qualities, dtype=np.float64)
    if q.shape != (len(embs),):
        raise ValueError(f"qualities shape {q.shape} != ({len(embs)},)")
    if not (np.isfinite(embs).all() and np.isfinite(q).all()):
        raise ValueError("embs and qualities must be finite")
    if (q < 0).any():
        raise ValueError(f"qualities must be >= 0, got min {q.min()}")
    norms = np.linalg.norm(embs, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise ValueError("embs holds a zero vector")
    units = embs / norms
    idx = np.argsort(-q, kind="stable")[:top_k] if top_k else np.arange(len(q))
    w = q[idx] if q[idx].sum() > 0 else np.ones(len(idx))
    mean = (w[:, None] * units[idx]).sum(0)
    n = np.linalg.norm(mean)
    if n < 1e-6:
        raise ValueError("the crops' embeddings cancel out; no direction to aggregate")
    return (mean / n).astype(np.float32)


@dataclass(frozen=True, eq=False)
class TrackSummary:
    """What the matcher needs of one per-camera track: where and when, and its unit embedding."""

    camera_id: str
    track_id: int
    start_ts: float
    end_ts: float
    emb: np.ndarray  # (D,) float32 unit vector
    num_crops: int = 1
    quality: float = 1.0

    def __post_init__(self) -> None:
        if not self.camera_id:
            raise ValueError("TrackSummary.camera_id must be a non-empty string")
        if not (math.isfinite(self.start_ts) and math.isfinite(self.end_ts)) or self.end_ts < self.start_ts:
            raise ValueError(f"TrackSummary {self.camera_id}/{self.track_id}: need finite start_ts <= end_ts, got "
                             f"{self.start_ts}..{self.end_ts}")
        e = self.emb
        if not isinstance(e, np.ndarray) or e.ndim != 1 or e.dtype != np.float32:
            raise ValueError(f"TrackSummary {self.camera_id}/{self.track_id}: emb must be a float32 (D,) array, got "
                             f"{getattr(e, 'dtype', type(e))} {getattr(e, 'shape', '')}")
        norm = float(np.linalg.norm(e))
        if not math.isfinite(norm) or abs(norm - 1) > 1e-3:
            raise ValueError(f"TrackSummary {self.camera_id}/{self.track_id}: emb must be a unit vector (norm "
                             f"{norm:.4g}); pass crop embeddings through aggregate_embeddings()")
        if self.num_crops < 1 or not self.quality >= 0:
            raise ValueError(f"TrackSummary {self.camera_id}/{self.track_id}: need num_crops >= 1 and quality >= 0")

    @property
    def ref(self) -> TrackRef:
        return TrackRef(self.camera_id, int(self.track_id), float(self.start_ts), float(self.end_ts), self.num_crops)

    @classmethod
    def from_crops(cls, camera_id: str, track_id: int, ts: np.ndarray, embs: np.ndarray,
                   qualities: np.ndarray | None = None, top_k: int | None = 8) -> TrackSummary:
        """A summary from a track's crops: times (N,), embeddings (N, D) and qualities (N,)."""
        ts = np.asarray(ts, dtype=np.float64)
        q = np.ones(len(embs)) if qualities is None else np.asarray(qualities, dtype=np.float64)
        best = np.sort(q)[::-1][:top_k] if top_k else q
        return cls(camera_id, int(track_id), float(ts.min()), float(ts.max()), aggregate_embeddings(embs, q, top_k),
                   num_crops=len(embs), quality=float(best.mean()))


TrackObservation = TrackSummary


@dataclass(frozen=True)
class MatchResult:
    """The global identity of one track. ``similarity`` is the cosine to the identity joined (for a new identity:
    to the best existing one, NaN when the gallery was empty); ``reason`` says why, e.g. ``matched``, ``known``,
    ``new:below_threshold``, ``new:ambiguous``, ``new:constraint``, ``new:taken``."""

    global_id: int
    similarity: float
    is_new: bool
    camera_id: str
    track_id: int
    reason: str = ""


# ----------------------------------------------------------------------------------------------------------------
# Constraints
# ----------------------------------------------------------------------------------------------------------------


def overlaps(a: TrackRef, b: TrackRef) -> bool:
    """Visible at the same time (touching end to start does not count: a tracker hand-off)."""
    return a.start_ts < b.end_ts and b.start_ts < a.end_ts


def compatible(a: TrackRef, b: TrackRef, topology: TopologyConfig | None) -> bool:
    """Can tracks ``a`` and ``b`` belong to one person?"""
    if a.camera_id == b.camera_id:
        return a.track_id == b.track_id or not overlaps(a, b)
    return topology is None or topology.allows(a, b)


def admissible(track: TrackRef, history: Sequence[TrackRef], topology: TopologyConfig | None) -> bool:
    """Can ``track`` join an identity with this sighting history?

    Every sighting at the same time must be compatible (never two simultaneous tracks in one camera), and so must
    the sightings right before and right after it: the topology constrains each step of a walk, not every pair of
    cameras a person has ever visited.
    """
    before: TrackRef | None = None
    after: TrackRef | None = None
    for h in history:
        if h.key == track.key:
            continue
        if overlaps(h, track):
            if not compatible(h, track, topology):
                return False
        elif h.end_ts <= track.start_ts:
            if before is None or h.end_ts > before.end_ts:
                before = h
        elif after is None or h.start_ts < after.start_ts:
            after = h
    return all(h is None or compatible(h, track, topology) for h in (before, after))


# ----------------------------------------------------------------------------------------------------------------
# Identity model
# ----------------------------------------------------------------------------------------------------------------


def new_identity(track: TrackSummary, global_id: int = 0) -> Identity:
    """An identity founded by ``track``: one prototype, weighted by the track's evidence."""
    return Identity(
        global_id=global_id, prototypes=track.emb[None].astype(np.float32), weights=np.array(
            [track.num_crops * max(track.quality, 1e-3)], dtype=np.float32),
        first_seen_ts=track.start_ts, last_seen_ts=track.end_ts, last_camera=track.camera_id, num_tracks=1,
        num_crops=track.num_crops, tracks=[track.ref], founder=track.ref.key, rev=1,
    )


def absorb(current: Identity | None, global_id: int, track: TrackSummary, config: MatcherConfig) -> Identity:
    """The identity after ``track`` joined it (or refreshed it, when the track was seen before).

    Only the track's *new* crops add evidence (crops counted at its previous update are not counted again), so
    applying the same update twice - two workers, or a retry after a lost reply - changes nothing. The evidence
    goes to the nearest prototype, or becomes a new prototype when it is unlike all of them and there is room.
    """
    if current is None:
        return new_identity(track, global_id)
    ident = current.copy()
    ident.global_id = global_id
    ref = track.ref
    old = next((t for t in ident.tracks if t.key == ref.key), None)
    gain = track.num_crops - (old.num_crops if old else 0)
    if gain > 0:
        w = gain * max(track.quality, 1e-3)
        sims = ident.prototypes @ track.emb
        j = int(np.argmax(sims))
        if sims[j] < config.prototype_merge_similarity and len(sims) < config.max_prototypes:
            ident.prototypes = np.vstack([ident.prototypes, track.emb[None]]).astype(np.float32)
            ident.weights = np.append(ident.weights, np.float32(w)).astype(np.float32)
        else:
            p = ident.weights[j] * ident.prototypes[j] + w * track.emb
            ident.prototypes[j] = p / max(float(np.linalg.norm(p)), 1e-12)
            ident.weights[j] += w
    if old is not None:
        ref = TrackRef(ref.camera_id, ref.track_id, min(old.start_ts, ref.start_ts), max(old.end_ts, ref.end_ts),
                       max(old.num_crops, ref.num_crops))
    ident.tracks = sorted([t for t in ident.tracks if t.key != ref.key] + [ref], key=lambda t: t.end_ts)
    ident.tracks = ident.tracks[-config.max_track_history :]
    ident.num_tracks += old is None
    ident.num_crops += max(gain, 0)
    ident.first_seen_ts = min(ident.first_seen_ts, track.start_ts)
    if track.end_ts >= ident.last_seen_ts:
        ident.last_seen_ts, ident.last_camera = track.end_ts, track.camera_id
    ident.rev += 1
    return ident


# ----------------------------------------------------------------------------------------------------------------
# Local gallery: all prototypes in one matrix
# ----------------------------------------------------------------------------------------------------------------


class Gallery:
    """The identities as one (P, D) prototype matrix, so a batch of tracks is one matrix product.

    An identity's prototypes sit in consecutive rows; an update appends new rows and marks the old ones dead
    (their scores are masked), and the matrix is compacted when half of it is dead. The best cosine per identity
    is a ``maximum.reduceat`` over its rows.

    With faiss, an IVF inner-product index (4 sqrt(N) lists, at most 1024; ``nprobe`` searched) mirrors the rows:
    built on first use, then kept in step row by row, and rebuilt (retrained) when the gallery has grown four-fold
    or was compacted. It is approximate: a track's true best identity may be missed, so it founds a duplicate.
    Flat faiss was measured no faster than numpy here (it is the same memory-bound scan).
    """

    def __init__(self, dim: int, index: str = "auto", faiss_min_identities: int = 100_000, faiss_nprobe: int = 32,
                 faiss_top_k: int = 64) -> None:
        if index == "faiss" and faiss is None:
            raise ImportError("index: faiss needs the faiss package (pip install faiss-cpu); or use index: numpy")
        self.dim = dim
        self.index = index
        self.faiss_min_identities = faiss_min_identities
        self.faiss_nprobe = faiss_nprobe
        self.faiss_top_k = faiss_top_k
        self._faiss_trained_rows = 0
        self.identities: dict[int, Identity] = {}
        self._protos = np.zeros((0, dim), dtype=np.float32)
        self._owner = np.zeros(0, dtype=np.int64)
        self._rows: dict[int, tuple[int, int]] = {}
        self._n = 0
        self._dead = 0
        self._order: tuple[np.ndarray, np.ndarray] | None = None
        self._faiss: Any = None

    def __len__(self) -> int:
        return len(self.identities)

    def __contains__(self, global_id: int) -> bool:
        return global_id in self.identities

    @property
    def num_rows(self) -> int:
        return self._n - self._dead

    def clear(self) -> None:
        self.__init__(self.dim, self.index, self.faiss_min_identities, self.faiss_nprobe,  # type: ignore[misc]
                      self.faiss_top_k)

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._protos):
            return
        cap = max(need, 2 * len(self._protos), 256)
        protos = np.zeros((cap, self.dim), dtype=np.float32)
        protos[: self._n] = self._protos[: self._n]
        owner = np.full(cap, -1, dtype=np.int64)
        owner[: self._n] = self._owner[: self._n]
        self._protos, self._owner = protos, owner

    def _kill(self, global_id: int) -> None:
        start, k = self._rows.pop(global_id)
        self._owner[start : start + k] = -1
        self._dead += k
        if self._faiss is not None:
            self._faiss.remove_ids(np.arange(start, start + k, dtype=np.int64))

    def upsert(self, ident: Identity) -> None:
        if ident.prototypes.shape[1] != self.dim:
            raise ValueError(f"identity {ident.global_id}: prototypes of dim {ident.prototypes.shape[1]} != {self.dim}")
        gid = ident.global_id
        if gid in self._rows:
            self._kill(gid)
        k = len(ident.prototypes)
        self._reserve(k)
        self._protos[self._n : self._n + k] = ident.prototypes
        self._owner[self._n : self._n + k] = gid
        self._rows[gid] = (self._n, k)
        if self._faiss is not None:
            self._faiss.add_with_ids(ident.prototypes, np.arange(self._n, self._n + k, dtype=np.int64))
        self._n += k
        self.identities[gid] = ident
        self._order = None
        if self._dead > max(1024, self._n // 2):
            self._compact()

    def remove(self, global_id: int) -> None:
        if global_id in self._rows:
            self._kill(global_id)
            del self.identities[global_id]
            self._order = None

    def replace(self, idents: Sequence[Identity]) -> None:
        self.clear()
        self._reserve(sum(len(i.prototypes) for i in idents))
        for ident in idents:
            self.upsert(ident)

    def _compact(self) -> None:
        live = sorted(self._rows.items(), key=lambda kv: kv[1][0])
        rows = np.concatenate([np.arange(s, s + k) for _, (s, k) in live]) if live else np.zeros(0, dtype=np.int64)
        self._protos[: len(rows)] = self._protos[rows]
        self._owner[: len(rows)] = self._owner[rows]
        self._owner[len(rows) :] = -1
        pos, self._rows = 0, {}
        for gid, (_, k) in live:
            self._rows[gid] = (pos, k)
            pos += k
        self._n, self._dead, self._order, self._faiss = len(rows), 0, None, None

    def _segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(row starts ascending, their global ids)."""
        if self._order is None:
            items = sorted(self._rows.items(), key=lambda kv: kv[1][0])
            self._order = (np.array([s for _, (s, _) in items], dtype=np.int64),
                           np.array([g for g, _ in items], dtype=np.int64))
        return self._order

    def scores(self, embs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M,) global ids and (T, M) best cosine of each track over each identity's prototypes (brute force)."""
        starts, gids = self._segments()
        embs = np.atleast_2d(embs).astype(np.float32, copy=False)
        if len(gids) == 0:
            return gids, np.zeros((len(embs), 0), dtype=np.float32)
        s = embs @ self._protos[: self._n].T
        if self._dead:
            s[:, self._owner[: self._n] < 0] = -np.inf
        return gids, np.maximum.reduceat(s, starts, axis=1)

    def similarity(self, global_id: int, emb: np.ndarray) -> float:
        ident = self.identities.get(global_id)
        return float(np.max(ident.prototypes @ emb)) if ident is not None else math.nan

    def _use_faiss(self) -> bool:
        if faiss is None or self.index == "numpy":
            return False
        return self.index == "faiss" or len(self.identities) >= self.faiss_min_identities

    def candidates(self, embs: np.ndarray, min_sim: float) -> tuple[list[dict[int, float]], list[float]]:
        """Per track: {global id: best cosine} for identities with cosine >= ``min_sim``, and the best cosine of all
        (NaN on an empty gallery)."""
        embs = np.atleast_2d(embs).astype(np.float32, copy=False)
        if self._use_faiss() and len(self.identities):
            return self._faiss_candidates(embs, min_sim)
        gids, s = self.scores(embs)
        out, best = [], []
        for row in s:
            keep = np.flatnonzero(row >= min_sim)
            out.append({int(gids[j]): float(row[j]) for j in keep})
            best.append(float(row.max()) if len(row) else math.nan)
        return out, best

    def _faiss_build(self) -> None:
        live = np.flatnonzero(self._owner[: self._n] >= 0)
        nlist = int(max(1, min(4 * math.sqrt(len(live)), len(live) // 39, 1024)))  # 1024: k-means stays ~1 min
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        sample = np.random.default_rng(0).choice(live, min(len(live), 64 * nlist), replace=False)
        index.train(self._protos[np.sort(sample)])
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids per row without scanning every list
        index.add_with_ids(self._protos[live], live.astype(np.int64))
        index.nprobe = min(self.faiss_nprobe, nlist)
        self._faiss, self._faiss_trained_rows = index, len(live)
        log.info("faiss IVF index: %d prototypes in %d lists, nprobe %d", len(live), nlist, index.nprobe)

    def _faiss_candidates(self, embs: np.ndarray, min_sim: float) -> tuple[list[dict[int, float]], list[float]]:
        if self._faiss is None or self.num_rows > 4 * self._faiss_trained_rows:
            self._faiss_build()
        sims, rows = self._faiss.search(embs, min(self.faiss_top_k, self.num_rows))
        out, best = [], []
        for t in range(len(embs)):
            cand: dict[int, float] = {}
            for s, r in zip(sims[t], rows[t], strict=True):
                if r < 0 or s < min_sim:
                    continue
                g = int(self._owner[r])
                if s > cand.get(g, -math.inf):
                    cand[g] = float(s)
            out.append(cand)
            best.append(float(sims[t, 0]) if rows[t, 0] >= 0 else math.nan)
        return out, best


# ----------------------------------------------------------------------------------------------------------------
# Assignment
# ----------------------------------------------------------------------------------------------------------------


def assign(scores: dict[int, dict[int, float]], threshold: float, method: str = "hungarian") -> dict[int, int]:
    """One-to-one assignment of tracks to identities from ``{track: {identity: cosine >= threshold}}``.

    Hungarian: maximise the total of ``cosine - threshold`` over the chosen pairs, each track also having the
    option of a new identity at zero gain, i.e. ``linear_sum_assignment`` on a (T, M + T) cost matrix. Greedy:
    take the most similar free pair first (what a per-track matcher does; kept for comparison).
    """
    rows = [t for t, c in scores.items() if c]
    if not rows:
        return {}
    if method == "greedy":
        pairs = sorted(((s, t, g) for t in rows for g, s in scores[t].items()), key=lambda p: (-p[0], p[1], p[2]))
        out: dict[int, int] = {}
        used: set[int] = set()
        for _, t, g in pairs:
            if t not in out and g not in used:
                out[t] = g
                used.add(g)
        return out
    if method != "hungarian":
        raise ValueError(f"unknown assignment {method!r}; valid: ['hungarian', 'greedy']")
    cols = sorted({g for t in rows for g in scores[t]})
    col = {g: j for j, g in enumerate(cols)}
    cost = np.full((len(rows), len(cols) + len(rows)), _BIG)
    for i, t in enumerate(rows):
        for g, s in scores[t].items():
            cost[i, col[g]] = threshold - s
        cost[i, len(cols) + i] = 0.0
    r, c = linear_sum_assignment(cost)
    return {rows[i]: cols[j] for i, j in zip(r, c, strict=True) if j < len(cols) and cost[i, j] < _BIG}


@dataclass
class Decision:
    """The plan for one track before it is written: join/refresh ``global_id`` (negative: an identity founded in
    this batch, not yet minted) or found a new one."""

    kind: Literal["known", "join", "found"]
    global_id: int
    similarity: float
    reason: str


@dataclass
class MatcherStats:
    tracks: int = 0
    matched: int = 0
    new: int = 0
    known: int = 0
    reloads: int = 0
    expired: int = 0
    raced: int = 0
    plan_s: float = 0.0
    write_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Matcher
# ----------------------------------------------------------------------------------------------------------------


class Matcher:
    """Matches batches of finished (or mature) tracks to global identities kept in ``store``.

    The gallery is loaded from the store at start (so a restarted matcher carries on), refreshed from the store's
    change log before every batch (so several matcher processes see each other's identities), and updated with
    every write this matcher makes.
    """

    def __init__(self, config: MatcherConfig, store: IdentityBackend) -> None:
        if store.dim != config.embedding_dim:
            raise ValueError(f"store dim {store.dim} != config embedding_dim {config.embedding_dim}")
        self.config = config
        self.store = store
        self.gallery = Gallery(config.embedding_dim, config.index, config.faiss_min_identities, config.faiss_nprobe,
                               config.faiss_top_k)
        self.stats = MatcherStats()
        self._cursor = "0-0"
        self._now_ts = -math.inf
        self._last_expire_ts = -math.inf
        self.reload()

    def reload(self) -> None:
        """Rebuild the local gallery from the store."""
        self._cursor = self.store.change_cursor()
        self.gallery.replace(self.store.load_all())
        self.stats.reloads += 1
        log.log(logging.INFO if len(self.gallery) else logging.DEBUG,
                "gallery loaded: %d identities, %d prototypes (%d corrupt records skipped)", len(self.gallery),
                self.gallery.num_rows, self.store.corrupt_records)

    def sync(self) -> None:
        """Apply the changes other writers made since the last sync."""
        cursor, changes = self.store.changes_since(self._cursor)
        if changes is None:
            log.info("change log does not reach back to %s; reloading the gallery", self._cursor)
            self.reload()
            return
        self._cursor = cursor
        fetch = []
        for gid, rev in changes.items():
            if rev < 0:
                self.gallery.remove(gid)
            elif gid not in self.gallery or self.gallery.identities[gid].rev < rev:
                fetch.append(gid)
        if fetch:
            found = self.store.get_many(fetch)
            for gid in fetch:
                if gid in found:
                    self.gallery.upsert(found[gid])
                else:
                    self.gallery.remove(gid)

    def get(self, global_id: int) -> Identity | None:
        ident = self.gallery.identities.get(global_id)
        return ident if ident is not None else self.store.get(global_id)

    def expire(self, now_ts: float | None = None) -> list[int]:
        """Delete identities unseen for ``expiry_s`` before ``now_ts`` (default: the latest track end seen)."""
        now = self._now_ts if now_ts is None else now_ts
        if not math.isfinite(now):
            return []
        removed = self.store.expire(now - self.config.expiry_s)
        for gid in removed:
            self.gallery.remove(gid)
        self._last_expire_ts = now
        self.stats.expired += len(removed)
        if removed:
            log.info("expired %d identities unseen since %.1f", len(removed), now - self.config.expiry_s)
        return removed

    # -- planning (pure: reads the local gallery only) ------------------------------------------------------------
    def plan(self, tracks: Sequence[TrackSummary], owners: Sequence[int | None]) -> list[Decision]:
        """Decide every track of the batch against the local gallery; ``owners`` are the known tracks' ids."""
        cfg = self.config
        thr, margin, topo = cfg.threshold, cfg.margin, cfg.topology
        refs = [t.ref for t in tracks]
        decisions: list[Decision | None] = [None] * len(tracks)
        histories: dict[int, list[TrackRef]] = {}

        def history(gid: int) -> list[TrackRef]:
            if gid not in histories:
                ident = self.gallery.identities.get(gid)
                histories[gid] = list(ident.tracks) if ident else []
            return histories[gid]

        def record(gid: int, ref: TrackRef) -> None:
            h = history(gid)
            h[:] = [r for r in h if r.key != ref.key] + [ref]

        for i, owner in enumerate(owners):
            if owner is not None:
                decisions[i] = Decision("known", owner, self.gallery.similarity(owner, tracks[i].emb), "known")
                record(owner, refs[i])
        pending = [i for i, d in enumerate(decisions) if d is None]
        if not pending:
            return decisions  # type: ignore[return-value]

        embs = np.stack([tracks[i].emb for i in pending])
        found_cands, found_best = self.gallery.candidates(embs, thr - margin)
        cands = dict(zip(pending, found_cands, strict=True))
        best = dict(zip(pending, found_best, strict=True))
        founders: dict[int, int] = {}  # placeholder gid -> track index
        next_placeholder = -1

        def found(i: int, reason: str) -> None:
            nonlocal next_placeholder
            gid, next_placeholder = next_placeholder, next_placeholder - 1
            decisions[i] = Decision("found", gid, best[i], reason)
            founders[gid] = i
            histories[gid] = [refs[i]]
            pending.remove(i)
            for j in pending:
                s = float(tracks[j].emb @ tracks[i].emb)
                if s >= thr - margin:
                    cands[j][gid] = s

        while pending:
            allowed = {i: {g: s for g, s in cands[i].items() if admissible(refs[i], history(g), topo)}
                       for i in pending}
            chosen = assign({i: {g: s for g, s in a.items() if s >= thr} for i, a in allowed.items()}, thr,
                            cfg.assignment)
            taken = {g: i for i, g in chosen.items()}
            accepted, ambiguous = [], []
            for i, g in sorted(chosen.items()):
                s = allowed[i][g]
                rival = max((s2 for g2, s2 in allowed[i].items() if g2 != g and taken.get(g2, i) == i),
                            default=-math.inf)
                (accepted if s - rival >= margin else ambiguous).append((i, g, s))
            for i, g, s in accepted:
                decisions[i] = Decision("join", g, s, "matched")
                record(g, refs[i])
                pending.remove(i)
            for i, _, _ in ambiguous:
                found(i, "new:ambiguous")
            if accepted or ambiguous:
                continue
            # Nobody can join an identity: found one per group of mutually similar, compatible tracks (best
            # quality first); the others may join those in the next round.
            leaders: list[int] = []
            for i in sorted(pending, key=lambda i: (-tracks[i].quality, -tracks[i].num_crops, i)):
                if not any(float(tracks[i].emb @ tracks[f].emb) >= thr and compatible(refs[i], refs[f], topo)
                           for f in leaders):
                    leaders.append(i)
            for i in leaders:
                above = [g for g, s in cands[i].items() if s >= thr and g not in founders]
                ok = [g for g in above if g in allowed.get(i, {})]
                found(i, "new:below_threshold" if not above else "new:constraint" if not ok else "new:taken")
        return decisions  # type: ignore[return-value]

    # -- matching -------------------------------------------------------------------------------------------------
    def match(self, tracks: Sequence[TrackSummary]) -> list[MatchResult]:
        """Global identities of ``tracks`` (one result per track, same order), decided jointly and written."""
        if not tracks:
            return []
        for t in tracks:
            if t.emb.shape != (self.config.embedding_dim,):
                raise ValueError(f"track {t.camera_id}/{t.track_id}: emb shape {t.emb.shape} != "
                                 f"({self.config.embedding_dim},)")
        keys = [t.ref.key for t in tracks]
        if len(set(keys)) != len(keys):
            raise ValueError("a batch holds the same (camera_id, track_id) twice; send one summary per track")
        self._now_ts = max(self._now_ts, max(t.end_ts for t in tracks))
        if self._now_ts - self._last_expire_ts >= self.config.expire_every_s:
            self.expire()
        self.sync()
        t0 = time.perf_counter()
        decisions = self.plan(tracks, self.store.lookup_tracks(keys))
        t1 = time.perf_counter()
        results = self._commit(tracks, decisions)
        self.stats.plan_s += t1 - t0
        self.stats.write_s += time.perf_counter() - t1
        return results

    def _commit(self, tracks: Sequence[TrackSummary], decisions: Sequence[Decision]) -> list[MatchResult]:
        minted: dict[int, int] = {}
        results: list[MatchResult | None] = [None] * len(tracks)

        def done(i: int, ident: Identity, similarity: float, reason: str) -> None:
            t = tracks[i]
            self.gallery.upsert(ident)
            is_new = reason.startswith("new") and ident.founder == t.ref.key
            if reason.startswith("new") and not is_new:
                reason = "raced"  # another worker placed this track first; its decision stands
                self.stats.raced += 1
            results[i] = MatchResult(ident.global_id, similarity, is_new, t.camera_id, t.track_id, reason)
            self.stats.tracks += 1
            self.stats.new += is_new
            self.stats.matched += reason == "matched"
            self.stats.known += reason == "known"
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

        def update(current: Identity | None, gid: int, t: TrackSummary) -> Identity:
            return absorb(current, gid, t, self.config)

        def create(i: int) -> Identity:
            t = tracks[i]
            ident = self.store.create_identity(new_identity(t), t.ref)
            if ident is None:  # the track's owner exists but its record is unreadable: rebuild it
                ident = self.store.attach_track(0, t.ref, lambda cur, gid: update(cur, gid, t))
            assert ident is not None
            return ident

        order = sorted(range(len(tracks)), key=lambda i: (decisions[i].kind != "found", -decisions[i].global_id))
        for i in order:
            d, t = decisions[i], tracks[i]
            if d.kind == "found":
                ident = create(i)
                minted[d.global_id] = ident.global_id
                done(i, ident, d.similarity, d.reason)
                continue
            gid = minted.get(d.global_id, d.global_id)
            ident = self.store.attach_track(gid, t.ref, lambda cur, g, t=t: update(cur, g, t))
            if ident is None:  # expired or deleted meanwhile by another worker
                self.gallery.remove(gid)
                done(i, create(i), d.similarity, "new:expired")
                continue
            sim = d.similarity if ident.global_id == gid else self.gallery.similarity(ident.global_id, t.emb)
            done(i, ident, sim, d.reason if ident.global_id == gid else "raced")
        return results  # type: ignore[return-value]


@contextmanager
def open_matcher(config: MatcherConfig) -> Iterator[Matcher]:
    """A matcher on ``config.redis``: the configured server, or a private embedded one started (and stopped) here."""
    from reid.embedded_redis import redis_url_for

    with redis_url_for(config.redis) as url:
        store = IdentityStore.from_config(config.redis, url, dim=config.embedding_dim,
                                          max_prototypes=config.max_prototypes)
        try:
            yield Matcher(config, store)
        finally:
            store.close()
