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
   track of the same round, and the round's tracks about to found an identity that could be the same person, so
   that two views of a newcomer seen at once are not split between an old lookalike and a new identity);
   otherwise the evidence is ambiguous and it founds a new identity, or, when the track is *provisional* (still
   running, not placed yet), it gets no identity yet and its caller asks again later, with more evidence: an
   identity founded on a close call is a person counted twice if the call was right.
5. Rounds repeat, with the histories updated, so tracks from *other* cameras can still join an identity taken
   in an earlier round (overlapping views), seen with the tracks that joined it (a view of a person too unlike
   the identity's prototypes may be like the person's other view that just joined, or linked to it: a track that
   joins or founds an identity offers it to the batch's other tracks alike); when a round assigns
   nothing, the remaining tracks found identities, one per group of mutually similar compatible tracks, and the
   rest may join those in the next round.
6. A track may carry *links*, evidence about other tracks that appearance does not give (:mod:`reid.identity.links`:
   where people stand on the ground, a person found again after an occlusion). An identity holding a track the
   link says DISAGREE with is not admissible; one holding a track it says AGREE with wins over appearance-only
   candidates, provided the appearance is at least ``link_min_similarity`` (reason ``linked`` when the
   appearance alone would not have passed the threshold); a CONTINUES link needs at least its track's
   ``continues_floor`` too (the site's two-people level).

All of this is decided on a local copy of the gallery (a prototype matrix searched by brute force, or an
approximate faiss IVF index when faiss is installed and the gallery is large); the decisions are then written
through the store, whose atomic writes keep several matcher processes consistent (see :mod:`reid.identity.store`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reid.identity.config import MatcherConfig
from reid.identity.gallery import Gallery, GalleryMirror
from reid.identity.geometry import AGREE, CONTINUES, DISAGREE, POSITIVE, UNKNOWN
from reid.identity.records import Identity, TrackRef
from reid.identity.redis_server import redis_url_for
from reid.identity.rules import admissible, assign, compatible
from reid.identity.store import IdentityBackend, IdentityStore

log = logging.getLogger(__name__)


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


# Added to the cosine of a linked identity, so that evidence outranks appearance alone, and being seen at one place
# at the same time (AGREE) outranks being found again nearby after an occlusion (CONTINUES).
_LINK_BONUS = {AGREE: 2.0, CONTINUES: 1.0}
assert set(_LINK_BONUS) == POSITIVE, "every positive verdict needs its bonus"


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
    links: Mapping[tuple[str, int], int] = field(default_factory=dict)  # other track key -> AGREE / DISAGREE
    # Still running and not placed yet: when its match is ambiguous it waits for more crops (no identity yet)
    # rather than founding one of its own at once.
    provisional: bool = False
    # The appearance a CONTINUES link of this track needs (the site's two-people level,
    # reid.identity.links.TwoPeopleLevels); None: link_min_similarity, as for every other link.
    continues_floor: float | None = None
    # Split at a swap (reid.identity.swaps): its span ends at end_ts, however late an earlier write said it ran.
    cut: bool = False

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


@dataclass(frozen=True)
class MatchResult:
    """The global identity of one track. ``similarity`` is the cosine to the identity joined (for a new identity:
    to the best existing one, NaN when the gallery was empty); ``reason`` says why, e.g. ``matched``, ``known``,
    ``new:below_threshold``, ``new:ambiguous``, ``new:constraint``, ``new:taken``. ``global_id`` is None, with reason
    ``deferred``, for a provisional track whose match was ambiguous: nothing was written, ask again later."""

    global_id: int | None
    similarity: float
    is_new: bool
    camera_id: str
    track_id: int
    reason: str = ""


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
        end = ref.end_ts if track.cut else max(old.end_ts, ref.end_ts)
        ref = TrackRef(ref.camera_id, ref.track_id, min(old.start_ts, ref.start_ts), end,
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
# Matcher
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Decision:
    """The plan for one track before it is written: join/refresh ``global_id`` (negative: an identity founded in
    this batch, not yet minted) or found a new one."""

    kind: Literal["known", "join", "found", "defer"]
    global_id: int
    similarity: float
    reason: str


@dataclass
class MatcherStats:
    """Counts since the matcher started (tracks decided, by outcome and by reason; time planning and writing),
    reported in the match stage's stats."""

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
        self._mirror = GalleryMirror(store, self.gallery)
        self._now_ts = -math.inf
        self._last_expire_ts = -math.inf
        self.reload()

    def reload(self) -> None:
        """Rebuild the local gallery from the store."""
        self._mirror.reload()
        self._loaded()

    def _loaded(self) -> None:
        self.stats.reloads += 1
        log.log(logging.INFO if len(self.gallery) else logging.DEBUG,
                "gallery loaded: %d identities, %d prototypes (%d corrupt records skipped)", len(self.gallery),
                self.gallery.num_rows, self.store.corrupt_records)

    def sync(self) -> None:
        """Apply the changes other writers made since the last sync."""
        if not self._mirror.sync():  # it reloaded
            self._loaded()

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
    def plan(self, tracks: Sequence[TrackSummary], owners: Sequence[int | None],
             link_owners: Mapping[tuple[str, int], int] | None = None,
             running: Mapping[int, Sequence[TrackRef]] | None = None) -> list[Decision]:
        """Decide every track of the batch against the local gallery; ``owners`` are the known tracks' ids,
        ``link_owners`` the identities of the tracks that the batch's AGREE links point to and ``running`` the
        current spans of placed tracks still running (see :meth:`match`)."""
        cfg = self.config
        thr, margin, topo, floor = cfg.threshold, cfg.margin, cfg.topology, cfg.link_min_similarity
        refs = [t.ref for t in tracks]
        decisions: list[Decision | None] = [None] * len(tracks)
        histories: dict[int, list[TrackRef]] = {}

        def history(gid: int) -> list[TrackRef]:
            if gid not in histories:
                ident = self.gallery.identities.get(gid)
                h = {r.key: r for r in (ident.tracks if ident else [])}
                for r in (running or {}).get(gid, ()):  # a running track's span as of now, newer than its record's
                    old = h.get(r.key)
                    h[r.key] = r if old is None or r.end_ts > old.end_ts else old
                histories[gid] = list(h.values())
            return histories[gid]

        def record(gid: int, ref: TrackRef) -> None:
            h = history(gid)
            h[:] = [r for r in h if r.key != ref.key] + [ref]

        def verdict(i: int, gid: int) -> int:
            """What track i's links say about identity gid: DISAGREE with any of its tracks wins, then AGREE, then
            CONTINUES."""
            links = tracks[i].links
            found = UNKNOWN
            for r in history(gid) if links else ():
                v = links.get(r.key, UNKNOWN)
                if v == DISAGREE:
                    return DISAGREE
                if v == AGREE or (v == CONTINUES and found == UNKNOWN):
                    found = v
            return found

        def backed(i: int, v: int, s: float) -> bool:
            """Is a positive verdict ``v`` of track i backed by the appearance ``s``?"""
            need = tracks[i].continues_floor if v == CONTINUES else None
            return v in POSITIVE and s >= (floor if need is None else max(floor, need))

        def effective(i: int, gid: int, s: float) -> float:
            """The score the assignment sees: a positive link with enough appearance outranks appearance alone."""
            v = verdict(i, gid)
            return s + _LINK_BONUS[v] if backed(i, v, s) else s

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
        for i in pending:  # identities an AGREE link points to are candidates whatever their appearance score
            for key, v in tracks[i].links.items():
                gid = (link_owners or {}).get(key)
                if v in POSITIVE and gid is not None and gid in self.gallery and gid not in cands[i]:
                    cands[i][gid] = self.gallery.similarity(gid, tracks[i].emb)
        founders: dict[int, int] = {}  # placeholder gid -> track index
        next_placeholder = -1

        def offer(i: int, gid: int) -> None:
            """Track i has just joined or founded identity gid: the batch's pending tracks see gid through it, where
            it is alike enough or a backed link points to it (the batch's own tracks are not in the gallery yet)."""
            for j in pending:
                s = float(tracks[j].emb @ tracks[i].emb)
                if s > cands[j].get(gid, -math.inf) and (
                        s >= thr - margin or backed(j, tracks[j].links.get(refs[i].key, UNKNOWN), s)):
                    cands[j][gid] = s

        def found(i: int, reason: str) -> None:
            nonlocal next_placeholder
            gid, next_placeholder = next_placeholder, next_placeholder - 1
            decisions[i] = Decision("found", gid, best[i], reason)
            founders[gid] = i
            histories[gid] = [refs[i]]
            pending.remove(i)
            offer(i, gid)

        def mate_rival(i: int, founding: list[int]) -> tuple[int, float]:
            """The batch's track most like track i among those about to found an identity, that could be the same
            person (another camera, or not seen at the same time, and no DISAGREE link): an identity not founded
            yet is a rival too."""
            return max(((j, float(tracks[i].emb @ tracks[j].emb)) for j in founding
                        if j != i and tracks[i].links.get(refs[j].key, UNKNOWN) != DISAGREE
                        and compatible(refs[i], refs[j], topo)), key=lambda p: p[1], default=(-1, -math.inf))

        while pending:
            allowed = {i: {g: effective(i, g, s) for g, s in cands[i].items()
                           if admissible(refs[i], history(g), topo) and verdict(i, g) != DISAGREE}
                       for i in pending}
            chosen = assign({i: {g: s for g, s in a.items() if s >= thr} for i, a in allowed.items()}, thr,
                            cfg.assignment)
            taken = {g: i for i, g in chosen.items()}
            founding = [j for j in pending if j not in chosen]  # they found identities (or wait) this round
            accepted, ambiguous = [], []
            for i, g in sorted(chosen.items()):
                s = allowed[i][g]
                rival, rival_gid = max(((s2, g2) for g2, s2 in allowed[i].items() if g2 != g and taken.get(g2, i) == i),
                                       default=(-math.inf, None))
                mate, mate_s = mate_rival(i, founding)
                if mate_s > rival:
                    rival, rival_gid = mate_s, f"to be founded by {refs[mate].camera_id}/{refs[mate].track_id}"
                (accepted if s - rival >= margin else ambiguous).append((i, g, s))
                if s - rival < margin:
                    log.debug("%s/%s ambiguous: identity %s at %.3f, identity %s at %.3f", refs[i].camera_id,
                              refs[i].track_id, g, s, rival_gid, rival)
            for i, g, _ in accepted:
                raw = cands[i][g]
                decisions[i] = Decision("join", g, raw, "matched" if raw >= thr else "linked")
                record(g, refs[i])
                pending.remove(i)
            for i, g, _ in accepted:
                offer(i, g)
            for i, _, _ in ambiguous:
                if tracks[i].provisional:
                    decisions[i] = Decision("defer", 0, best[i], "deferred")
                    pending.remove(i)
                else:
                    found(i, "new:ambiguous")
            if accepted or ambiguous:
                continue
            # Nobody can join an identity: found one per group of mutually similar (or linked), compatible tracks
            # (best quality first); the others may join those in the next round.
            def grouped(i: int, f: int) -> bool:
                s = float(tracks[i].emb @ tracks[f].emb)
                link = tracks[i].links.get(refs[f].key, UNKNOWN)
                return link != DISAGREE and (s >= thr or backed(i, link, s)) \
                    and compatible(refs[i], refs[f], topo)

            leaders: list[int] = []
            for i in sorted(pending, key=lambda i: (-tracks[i].quality, -tracks[i].num_crops, i)):
                if not any(grouped(i, f) for f in leaders):
                    leaders.append(i)
            for i in leaders:
                above = [g for g, s in cands[i].items() if s >= thr and g not in founders]
                ok = [g for g in above if g in allowed.get(i, {})]
                found(i, "new:below_threshold" if not above else "new:constraint" if not ok else "new:taken")
        return decisions  # type: ignore[return-value]

    # -- matching -------------------------------------------------------------------------------------------------
    def match(self, tracks: Sequence[TrackSummary],
              running: Mapping[int, Sequence[TrackRef]] | None = None) -> list[MatchResult]:
        """Global identities of ``tracks`` (one result per track, same order), decided jointly and written.

        ``running``: by identity, the spans of its tracks that are still running, as of this decision. An identity
        record keeps each track's span as of its last write; a person still standing in view must count as seen
        "until now" for the co-occurrence check, but rewriting the record at every decision to say so would cost a
        16 KB write per running track per decision. These spans are used for this decision only, never written.
        """
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
        linked = sorted({k for t in tracks for k, v in t.links.items() if v in POSITIVE})
        found = self.store.lookup_tracks(keys + linked)  # one round trip for both
        link_owners = {k: g for k, g in zip(linked, found[len(keys):], strict=True) if g is not None}
        decisions = self.plan(tracks, found[: len(keys)], link_owners, running)
        t1 = time.perf_counter()
        results = self._commit(tracks, decisions)
        self.stats.plan_s += t1 - t0
        self.stats.write_s += time.perf_counter() - t1
        return results

    def move(self, track: TrackSummary, to_global_id: int | None) -> tuple[Identity, int] | None:
        """Correct a placed track's identity: move it to ``to_global_id`` (None: a new identity of its own).
        Returns (its new identity, the former one's id), or None when the store could not (the track has no owner,
        or the target expired meanwhile). The local gallery follows, a former identity left empty is deleted."""
        moved = self.store.move_track(track.ref, to_global_id,
                                      lambda cur, gid: absorb(cur, gid, track, self.config),
                                      lambda old: detach(old, track.ref.key))
        if moved is None:
            return None
        ident, old_gid, rest = moved
        self.gallery.upsert(ident)
        if rest is None:
            self.gallery.remove(old_gid)
        else:
            self.gallery.upsert(rest)
        self.stats.reasons["corrected"] = self.stats.reasons.get("corrected", 0) + 1
        return ident, old_gid

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
            if d.kind == "defer":
                results[i] = MatchResult(None, d.similarity, False, t.camera_id, t.track_id, d.reason)
                self.stats.reasons[d.reason] = self.stats.reasons.get(d.reason, 0) + 1
                continue
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


def detach(ident: Identity, key: tuple[str, int]) -> Identity | None:
    """The identity without track ``key``; None when it held no other track (by its count, not its capped list).
    Its last sighting and camera come from the tracks it keeps. Its prototypes keep that track's evidence: a running
    weighted mean cannot give it back, and the identity's next tracks outweigh it."""
    if ident.num_tracks <= 1:
        return None
    gone = next((r for r in ident.tracks if r.key == key), None)
    out = ident.copy()
    out.tracks = [r for r in ident.tracks if r.key != key]
    out.num_tracks -= 1
    out.num_crops = max(0, out.num_crops - (gone.num_crops if gone else 0))
    if out.tracks:
        last = max(out.tracks, key=lambda r: r.end_ts)
        out.last_seen_ts, out.last_camera = last.end_ts, last.camera_id
    out.rev += 1
    return out


@contextmanager
def open_matcher(config: MatcherConfig) -> Iterator[Matcher]:
    """A matcher on ``config.redis``: the configured server, or a private embedded one started (and stopped) here."""
    with redis_url_for(config.redis) as url:
        store = IdentityStore.from_config(config, url)
        try:
            yield Matcher(config, store)
        finally:
            store.close()
