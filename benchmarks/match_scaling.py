"""Matcher scaling: time to match a track against 1e3..1e5 identities, and Redis write operations per second.

    python benchmarks/match_scaling.py [--sizes 1000 10000 100000] [--repeats 20] [--json]

Prints one table. Gallery rows time :meth:`reid.identity.matcher.Matcher.plan` (search of the local prototype matrix,
constraints and assignment, no I/O) for one track, and for a batch of 32 tracks, against galleries of random
unit prototypes; 1e6 identities runs only when faiss is installed (numpy brute force would need 4 GB per copy).
Redis rows time single operations on a private embedded Redis (append-only, fsync every second): minting an
identity (Lua), attaching a track (WATCH/MULTI), and a whole ``Matcher.match`` of one track (sync, lookup, plan,
write) on a 1e3 gallery. Median and p90 over the repeats after warm-up; the ratio is the row's operations per
second over the baseline row's (matching one track against 1e3 identities with numpy), measured in the same run.

BLAS runs single-threaded unless ``OPENBLAS_NUM_THREADS`` says otherwise: the matcher's products are small, and
on a 2-core machine waking a second OpenBLAS thread cost about 10 ms per product (1 track vs 1e3 identities:
12 ms with 2 threads, 0.16 ms with 1), while at 1e5 identities the product is memory-bound and a second thread
gained almost nothing. Run the matcher stage the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS; see the module docstring

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid.identity.config import MatcherConfig, RedisConfig  # noqa: E402
from reid.identity.gallery import faiss  # noqa: E402
from reid.identity.matcher import Matcher, TrackSummary, absorb, new_identity  # noqa: E402
from reid.identity.records import Identity, TrackRef  # noqa: E402
from reid.identity.redis_server import EmbeddedRedis  # noqa: E402
from reid.identity.store import IdentityStore, MemoryStore  # noqa: E402

D = 1024


def device_name() -> str:
    return (f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")


def time_fn(fn: Callable[[int], object], repeats: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return times


def random_units(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def summary(camera: str, tid: int, emb: np.ndarray, ts: float) -> TrackSummary:
    return TrackSummary(camera, tid, ts, ts + 5.0, emb, num_crops=4, quality=1.0)


def synthetic_gallery(n: int, rng: np.random.Generator) -> list[Identity]:
    """``n`` identities of one random prototype each (views into one array: 1e6 of them take 4 GB, not 8)."""
    protos = random_units(rng, n)
    one = np.ones(1, dtype=np.float32)
    return [Identity(i + 1, protos[i : i + 1], one, float(i % 1000), float(i % 1000) + 5, "g", 1, 4,
                     [TrackRef("g", i, float(i % 1000), float(i % 1000) + 5, 4)], ("g", i)) for i in range(n)]


def row(name: str, size: int, times: list[float], per_call: int = 1) -> dict:
    med = statistics.median(times)
    return {"operation": name, "gallery": size, "median_ms": 1e3 * med, "p90_ms": 1e3 * float(np.percentile(times, 90)),
            "ops_per_s": per_call / med}


def gallery_rows(sizes: list[int], repeats: int, index: str, rng: np.random.Generator) -> list[dict]:
    rows = []
    for n in sizes:
        cfg = MatcherConfig(index=index, faiss_min_identities=1)
        m = Matcher(cfg, MemoryStore(D))
        m.gallery.replace(synthetic_gallery(n, rng))
        probes = random_units(rng, repeats + 3 + 32)
        one = time_fn(lambda i, m=m, p=probes: m.plan([summary("q", i, p[i], 5000.0)], [None]), repeats, 3)
        rows.append(row(f"plan 1 track ({index})", n, one))
        batch = [summary("q", 1000 + j, probes[j], 5000.0) for j in range(32)]
        many = time_fn(lambda i, m=m, b=batch: m.plan(b, [None] * 32), max(3, repeats // 4), 1)
        rows.append(row(f"plan 32 tracks ({index})", n, many, per_call=32))
        del m
    return rows


def redis_rows(repeats: int, rng: np.random.Generator) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="match_scaling_") as tmp, EmbeddedRedis(tmp, supervise=False) as server:
        cfg = MatcherConfig(redis=RedisConfig(url=server.url))
        store = IdentityStore.from_config(cfg)
        n = max(repeats, 50)
        embs = random_units(rng, 4 * n + 10)
        created: list[int] = []

        def create(i: int) -> None:
            t = summary("c1", 10_000 + i, embs[i % len(embs)], 0.0)
            ident = store.create_identity(new_identity(t), t.ref)
            created.append(ident.global_id)  # type: ignore[union-attr]

        rows = [row("redis create_identity (Lua)", 0, time_fn(create, n, 5))]

        def attach(i: int) -> None:
            gid = created[i % len(created)]
            t = summary("c2", 20_000 + i, embs[(i + 7) % len(embs)], 10.0)
            store.attach_track(gid, t.ref, lambda cur, g, t=t: absorb(cur, g, t, cfg))

        rows.append(row("redis attach_track (WATCH/MULTI)", 0, time_fn(attach, n, 5)))
        store.client.flushall()
        for ident in synthetic_gallery(1000, rng):
            t = summary("g", ident.global_id, ident.prototypes[0], 0.0)
            store.create_identity(ident, t.ref)
        matcher = Matcher(cfg, store)
        probes = random_units(rng, n + 10)
        rows.append(row("Matcher.match 1 track via Redis", 1000,
                        time_fn(lambda i: matcher.match([summary("c3", 30_000 + i, probes[i], 20.0)]), n, 5)))
        t0 = time.perf_counter()
        loaded = store.load_all()
        rows.append(row("redis load_all (records)", len(loaded), [time.perf_counter() - t0], per_call=len(loaded)))
        store.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/match_scaling.py", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--repeats", type=int, default=20, help="timed runs per row (median and p90 over these)")
    p.add_argument("--faiss-sizes", type=int, nargs="*", default=[1_000_000],
                   help="extra gallery sizes for the faiss rows (need about 12 GB of memory per 1e6 identities)")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis rows")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = gallery_rows(args.sizes, args.repeats, "numpy", rng)
    if faiss is not None:
        rows += gallery_rows(sorted(set(args.sizes) | set(args.faiss_sizes)), args.repeats, "faiss", rng)
    if not args.no_redis:
        rows += redis_rows(args.repeats, rng)
    base = next(r for r in rows if r["operation"] == "plan 1 track (numpy)")
    for r in rows:
        r["ratio"] = r["ops_per_s"] / base["ops_per_s"]
    header = (f"Matcher scaling on {device_name()}, numpy {np.__version__}, faiss "
              f"{'installed' if faiss is not None else 'not installed'}; baseline = plan 1 track (numpy) against "
              f"{base['gallery']} identities, same run")
    if args.json:
        print(json.dumps({"device": device_name(), "header": header, "rows": rows}))
        return 0
    print(header)
    print(f"{'operation':<34}{'gallery':>9}{'median ms':>11}{'p90 ms':>9}{'ops/s':>11}{'ratio':>8}")
    for r in rows:
        print(f"{r['operation']:<34}{r['gallery']:>9}{r['median_ms']:>11.3f}{r['p90_ms']:>9.3f}"
              f"{r['ops_per_s']:>11.1f}{r['ratio']:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
