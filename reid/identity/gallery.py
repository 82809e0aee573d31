"""The local gallery: every identity's prototypes in one matrix, searched by numpy or (optionally) faiss.

Why apart from the matcher: the search is the part that scales with the number of identities
(benchmarks/match_scaling.py times it alone), and its row bookkeeping has nothing to do with the decision rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from reid.identity.records import Identity

if TYPE_CHECKING:
    from reid.identity.store import IdentityBackend

try:  # optional: approximate (IVF) inner-product search for galleries beyond ~1e5 identities
    import faiss  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - faiss is not a dependency
    faiss = None

log = logging.getLogger(__name__)


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

    def apply_changes(self, changes: dict[int, int],
                      fetch: Callable[[list[int]], dict[int, Identity]]) -> None:
        """Bring the gallery up to a store's change log (``{global_id: revision}``, negative = deleted): drop the
        deleted identities and fetch those with a newer revision than held (missing from the store: dropped)."""
        stale = []
        for gid, rev in changes.items():
            if rev < 0:
                self.remove(gid)
            elif gid not in self or self.identities[gid].rev < rev:
                stale.append(gid)
        if stale:
            found = fetch(stale)
            for gid in stale:
                if gid in found:
                    self.upsert(found[gid])
                else:
                    self.remove(gid)

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

    def within(self, global_ids: set[int], embs: np.ndarray, min_sim: float) -> set[int]:
        """Those of ``global_ids`` (absent ones skipped) with a prototype at cosine >= ``min_sim`` to any of ``embs``
        (one product over their rows, not a search of the whole gallery)."""
        held = sorted(g for g in global_ids if g in self._rows)
        if not held:
            return set()
        rows = np.concatenate([np.arange(s, s + k) for s, k in (self._rows[g] for g in held)])
        best = (self._protos[rows] @ np.atleast_2d(embs).T).max(axis=1)
        owners = self._owner[rows]
        return {int(g) for g in np.unique(owners[best >= min_sim])}

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


class GalleryMirror:
    """A local :class:`Gallery` kept up to date from a store's change log (the matcher's, the search's): a sync
    costs the changed records, not a reload of every record (16 KB each) from Redis."""

    def __init__(self, store: IdentityBackend, gallery: Gallery) -> None:
        self.store = store
        self.gallery = gallery
        self.cursor = "0-0"

    def reload(self) -> None:
        """Rebuild the gallery from every record in the store."""
        self.cursor = self.store.change_cursor()
        self.gallery.replace(self.store.load_all())

    def sync(self) -> bool:
        """Apply the changes made since the last sync or reload; when the change log no longer reaches back that
        far, reload instead and return False."""
        cursor, changes = self.store.changes_since(self.cursor)
        if changes is None:
            log.info("change log does not reach back to %s; reloading the gallery", self.cursor)
            self.reload()
            return False
        self.cursor = cursor
        self.gallery.apply_changes(changes, self.store.get_many)
        return True
