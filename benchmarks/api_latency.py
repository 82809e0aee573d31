"""HTTP API latency with many identities: p50/p95 of /api/identities, /api/identities/{id} and /api/search.

    python benchmarks/api_latency.py [--identities 10000] [--requests 200] [--searches 50] [--json]

Synthetic identities (random unit prototypes, four each, one appearance and one 128-px JPEG thumbnail) are written
through the real store and album into a private embedded Redis; the service runs as the pipeline runs it (uvicorn in
a thread, the pipeline's embedder for the photo) and is called over HTTP from this process, one request at a time.
The first search (which builds the embedder and loads the gallery) is timed apart and not in the percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ReidConfig  # noqa: E402
from pipeline.service.app import ServiceContext, create_app  # noqa: E402
from pipeline.service.config import HttpConfig  # noqa: E402
from pipeline.service.server import ServiceThread  # noqa: E402
from reid.identity.album import Album, Appearance  # noqa: E402
from reid.identity.config import MatcherConfig  # noqa: E402
from reid.identity.records import Identity, TrackRef  # noqa: E402
from reid.identity.redis_server import EmbeddedRedis  # noqa: E402
from reid.identity.store import IdentityStore  # noqa: E402
from reid.paths import shared_root  # noqa: E402


def fill(store: IdentityStore, album: Album, n: int, jpeg: bytes) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        p = rng.standard_normal((4, store.dim)).astype(np.float32)
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        cam = f"c{i % 3}"
        ident = Identity(0, p, np.ones(4, np.float32), float(i), float(i + 5), cam, 1, 4,
                         [TrackRef(cam, i, float(i), float(i + 5), 4)], (cam, i))
        gid = store.create_identity(ident, TrackRef(cam, i, float(i), float(i + 5), 4)).global_id
        album.record(gid, Appearance(cam, i, float(i), float(i + 5)), jpeg, 0.5)


def timed(fn, repeats: int) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def post_photo(url: str, jpeg: bytes) -> bytes:
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"p.jpg\"\r\n\r\n").encode() + jpeg + \
        f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--identities", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--searches", type=int, default=50)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    photo = sorted((shared_root() / "datasets" / "cuhk03_p1" / "query").glob("*.jpg"))[0].read_bytes()
    r = ReidConfig()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", appendfsync="no") as server:
        store = IdentityStore.from_config(MatcherConfig(), server.url)
        album = Album(store)
        t0 = time.perf_counter()
        fill(store, album, args.identities, photo)
        fill_s = time.perf_counter() - t0
        ctx = ServiceContext(HttpConfig(port=0), store, album, [], Path(tmp), None,
                             lambda: r.build_embedder(max_batch=1))
        service = ServiceThread(create_app(ctx), "127.0.0.1", 0).start()
        try:
            url = service.url
            gids = [int(g) for g in store.all_ids()]
            rng = np.random.default_rng(1)
            first = timed(lambda: post_photo(f"{url}/api/search", photo), 1)[0]
            rows = {
                "GET /api/identities (page of 50)": timed(
                    lambda: get(f"{url}/api/identities?offset={int(rng.integers(0, len(gids) - 50))}&limit=50"),
                    args.requests),
                "GET /api/identities/{id}": timed(lambda: get(f"{url}/api/identities/{rng.choice(gids)}"),
                                                  args.requests),
                "POST /api/search (top 10)": timed(lambda: post_photo(f"{url}/api/search", photo), args.searches),
            }
        finally:
            service.stop()
            store.close()
    out = {"identities": args.identities, "fill_s": round(fill_s, 1), "first_search_ms": round(first, 1),
           "rows": {k: {"p50_ms": round(statistics.median(v), 2), "p95_ms": round(float(np.percentile(v, 95)), 2),
                        "n": len(v)} for k, v in rows.items()}}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.identities} identities (written in {out['fill_s']} s); first search {out['first_search_ms']} ms "
          "(embedder built, gallery loaded)")
    print("| endpoint | requests | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for k, v in out["rows"].items():
        print(f"| {k} | {v['n']} | {v['p50_ms']} | {v['p95_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
