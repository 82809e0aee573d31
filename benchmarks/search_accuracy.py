"""Search by photo, scored: each cuhk03_p1 query crop searched against identities built from the gallery crops.

    python benchmarks/search_accuracy.py [--data ../shared/datasets/cuhk03_p1] [--people N] [--evaluate] [--json]

Every gallery person (camera 2) becomes one identity through the real store on a private embedded Redis, in two
ways: with one prototype per gallery crop (what the search does is then the same nearest-neighbour ranking as
``reid.evaluate``, so top-1 must equal its Rank-1), and with one prototype, the quality-weighted mean of the
person's crops (what one pipeline track of them would give). Each query crop (camera 1) is embedded with the
pipeline's embedder (``ReidConfig`` defaults: the shipped weights, ONNX Runtime on a CPU) and searched with
:class:`pipeline.search.Searcher`. Top-1/top-5: the right person is the first / among the first five identities.

The reference row is ``reid.metrics.evaluate_rank`` (the code ``reid.evaluate`` scores with) on the same
embeddings; ``--evaluate`` also runs ``python -m reid.evaluate --json`` (PyTorch, the whole split) for its row.
Top-5 counts identities, Rank-5 gallery crops (five crops may be fewer than five people), so top-5 can be higher.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ReidConfig  # noqa: E402
from pipeline.search import Searcher  # noqa: E402
from reid.data import load_market  # noqa: E402
from reid.identity.album import Album  # noqa: E402
from reid.identity.matcher import TrackSummary, new_identity  # noqa: E402
from reid.identity.records import Identity  # noqa: E402
from reid.identity.redis_server import EmbeddedRedis  # noqa: E402
from reid.identity.store import IdentityStore  # noqa: E402
from reid.metrics import distance_matrix, evaluate_rank  # noqa: E402
from reid.paths import default_dataset  # noqa: E402


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_identities(store: IdentityStore, pids: np.ndarray, embs: np.ndarray, per_crop: bool) -> dict[int, int]:
    """One identity per person through ``store.create_identity``; returns global id -> person id."""
    owner = {}
    for pid in np.unique(pids):
        rows = embs[pids == pid]
        track = TrackSummary.from_crops("c2", int(pid), np.arange(len(rows), dtype=float), rows, top_k=None)
        ident = new_identity(track)
        if per_crop:
            ident = Identity(0, unit_rows(rows), np.ones(len(rows), np.float32), ident.first_seen_ts,
                             ident.last_seen_ts, "c2", 1, len(rows), ident.tracks, ident.founder)
        created = store.create_identity(ident, track.ref)
        owner[created.global_id] = int(pid)
    return owner


def score(searcher: Searcher, owner: dict[int, int], q_embs: np.ndarray, q_pids: np.ndarray) -> dict[str, float]:
    top1 = top5 = 0
    t0 = time.perf_counter()
    for emb, pid in zip(q_embs, q_pids, strict=True):
        ranked = [owner[h.global_id] for h in searcher.search_embedding(emb, top=5)]
        top1 += ranked[:1] == [pid]
        top5 += pid in ranked
    n = len(q_pids)
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "ms_per_search": 1e3 * (time.perf_counter() - t0) / n}


def run(data: Path, people: int | None = None, evaluate: bool = False) -> dict:
    ds = load_market(data)
    keep = sorted({s.pid for s in ds.gallery.samples})[:people] if people else None
    query = [s for s in ds.query.samples if keep is None or s.pid in keep]
    gallery = [s for s in ds.gallery.samples if keep is None or s.pid in keep]
    r = ReidConfig()
    embedder = r.build_embedder()
    q_embs = embedder.embed([cv2.imread(str(s.path)) for s in query])
    g_embs = embedder.embed([cv2.imread(str(s.path)) for s in gallery])
    q_pids = np.array([s.pid for s in query])
    g_pids = np.array([s.pid for s in gallery])
    q_unit = unit_rows(q_embs)  # the search embeds a photo as a one-crop track: the unit vector of its embedding
    out: dict = {"data": str(data), "queries": len(query), "gallery_crops": len(gallery),
                 "people": len(np.unique(g_pids)), "embedder": embedder.description}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", appendfsync="no") as server:
        most = int(np.bincount(g_pids - g_pids.min()).max())
        for name, per_crop in (("one prototype per crop", True), ("one prototype per person (mean)", False)):
            store = IdentityStore(redis.Redis.from_url(server.url), dim=q_embs.shape[1], max_prototypes=max(most, 4),
                                  namespace="crop" if per_crop else "mean")
            owner = build_identities(store, g_pids, g_embs, per_crop)
            out[name] = score(Searcher(store, Album(store)), owner, q_unit, q_pids)
            store.close()
    dist = distance_matrix(q_embs, g_embs, "cosine")
    ref = evaluate_rank(dist, q_pids, g_pids, np.ones_like(q_pids), np.full_like(g_pids, 2)).as_percent()
    out["reid.metrics on the same embeddings"] = {"top1": ref["rank1"], "top5": ref["rank5"]}
    if evaluate:
        proc = subprocess.run([sys.executable, "-m", "reid.evaluate", "--data", str(data), "--json"],
                              capture_output=True, text=True, check=True)
        ev = json.loads(proc.stdout.strip().splitlines()[-1])
        out["python -m reid.evaluate --json"] = {"top1": ev["rank1"], "top5": ev["rank5"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None, help="Market-layout dataset (default: shared cuhk03_p1)")
    p.add_argument("--people", type=int, default=None, help="only the first N gallery people (a quick check)")
    p.add_argument("--evaluate", action="store_true", help="also run python -m reid.evaluate --json (full split)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = run(args.data or default_dataset(), args.people, args.evaluate)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['data']}: {out['queries']} queries, {out['gallery_crops']} gallery crops of {out['people']} people; "
          f"{out['embedder']}")
    print("| gallery | top-1 / Rank-1 | top-5 / Rank-5 | ms per search |")
    print("|---|---|---|---|")
    for name, row in out.items():
        if isinstance(row, dict):
            ms = f"{row['ms_per_search']:.2f}" if "ms_per_search" in row else ""
            print(f"| {name} | {row['top1']:.2f} | {row['top5']:.2f} | {ms} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
