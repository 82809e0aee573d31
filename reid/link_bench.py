"""Cross-camera linking benchmark on real people: the matcher and a real Redis on a Market-layout test set.

    python -m reid.link_bench [--data DIR] [--weights W] [--threshold T] [--json] [--out DIR]
                              [--mode batch|stream] [--unseen-share F]

Each (person, camera) group of the query and gallery crops is one track. Camera 1's tracks are matched first, as
one batch, then camera 2's (then any further camera's), through :class:`reid.identity.matcher.Matcher` on a real Redis
(a private embedded one unless ``--redis-url``). ``--mode batch`` (default): all tracks of one camera share one
10 s window, as people seen by a camera during one interval, so they are matched as one batch and compete for
identities (joint assignment; the co-occurrence rule keeps them apart). ``--mode stream``: the later cameras'
tracks come one at a time, each in its own time slot, in a shuffled order - the threshold and margin alone
decide. ``--unseen-share F`` withholds camera 1's track of that share of people (the open world: their camera-2
tracks should found new identities). Reported (:mod:`reid.identity.link_metrics`), over the tracks of the cameras
after the first:

- ``correct_link``: share given the right identity (the one holding the person's earlier track; a new one for a
  person not seen before),
- ``false_merge``: share put into another person's identity,
- ``false_new``: share given a new identity although the person already had one,

and ``idf1`` over all tracks (one unit per track; identities mapped one-to-one to people by the Hungarian
method, as in Ristani et al., ECCV 2016 workshops). With ``--out``: ``link_sweep.png`` and ``link_sweep.json``,
the same scores over a threshold sweep in four scenarios (batch/stream x all people seen / half unseen), computed
with the same matcher on an in-memory store (the Redis row is checked against it), to choose the threshold.

On CPU, set ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000`` (see benchmarks/embed_throughput.py):
embedding the crops is most of the run time and runs about twice as fast with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reid.data import DISTRACTOR_PID, JUNK_PID, DatasetError, Sample, load_images, load_market
from reid.identity.config import MatcherConfig, RedisConfig
from reid.identity.link_metrics import LinkTrack, link_scores
from reid.identity.matcher import Matcher, MatchResult, TrackSummary, open_matcher
from reid.identity.redis_server import EmbeddedRedisError, RedisBinaryNotFound
from reid.identity.store import MemoryStore
from reid.log import setup_logging
from reid.paths import DEFAULT_WEIGHTS, default_dataset

log = logging.getLogger("reid.link_bench")

TRACK_WINDOW_S = 10.0  # every camera's tracks lie in one window of this length
CAMERA_GAP_S = 100.0  # from one camera's window to the next (inside no travel-time bound: no topology here)
STREAM_SLOT_S = 20.0  # stream mode: one later track every this many seconds
DEFAULT_SWEEP = tuple(np.round(np.arange(0.30, 0.951, 0.025), 3))
SCENARIOS = (("batch", 0.0), ("batch", 0.5), ("stream", 0.0), ("stream", 0.5))


def build_tracks(samples: Sequence[Sample], embs: np.ndarray, crops_per_track: int = 8) -> list[list[LinkTrack]]:
    """One track per (person, camera) with its crops' embeddings aggregated; one batch per camera, in order."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.pid not in (JUNK_PID, DISTRACTOR_PID):  # a distractor group would be many people in one track
            groups[(s.pid, s.camid)].append(i)
    cams = sorted({cam for _, cam in groups})
    batches: list[list[LinkTrack]] = []
    for k, cam in enumerate(cams):
        t0 = k * CAMERA_GAP_S
        batch = []
        for (pid, c), idx in sorted(groups.items()):
            if c != cam:
                continue
            ts = t0 + np.linspace(0.0, TRACK_WINDOW_S, len(idx))
            summary = TrackSummary.from_crops(f"c{cam}", pid, ts, embs[idx], top_k=crops_per_track)
            batch.append(LinkTrack(summary, pid))
        batches.append(batch)
    return batches


def scenario(batches: Sequence[Sequence[LinkTrack]], mode: str = "batch", unseen_share: float = 0.0,
             seed: int = 0) -> list[list[LinkTrack]]:
    """The batches as fed to the matcher: camera 1 minus the withheld people, then the later cameras as one batch
    each (batch) or one track at a time in shuffled order, each in its own time slot (stream)."""
    if mode not in ("batch", "stream"):
        raise ValueError(f"unknown mode {mode!r}; valid: ['batch', 'stream']")
    rng = np.random.default_rng(seed)
    first = list(batches[0])
    if unseen_share > 0:
        pids = sorted({t.pid for t in first})
        drop = set(rng.choice(pids, int(round(unseen_share * len(pids))), replace=False).tolist())
        first = [t for t in first if t.pid not in drop]
    out = [first]
    if mode == "batch":
        return out + [list(b) for b in batches[1:]]
    clock = CAMERA_GAP_S
    for batch in batches[1:]:
        for i in rng.permutation(len(batch)):
            t = batch[i]
            out.append([LinkTrack(dataclasses.replace(t.summary, start_ts=clock, end_ts=clock + TRACK_WINDOW_S),
                                  t.pid)])
            clock += STREAM_SLOT_S
        clock += CAMERA_GAP_S
    return out


def run_batches(matcher: Matcher, batches: Sequence[Sequence[LinkTrack]]) -> list[list[MatchResult]]:
    return [matcher.match([t.summary for t in batch]) for batch in batches]


def run_in_memory(config: MatcherConfig, batches: Sequence[Sequence[LinkTrack]]) -> dict[str, float]:
    return link_scores(batches, run_batches(Matcher(config, MemoryStore(config.embedding_dim)), batches))


def run_on_redis(config: MatcherConfig, batches: Sequence[Sequence[LinkTrack]]) -> tuple[dict[str, float], float]:
    """Scores through a real Redis (embedded in a temporary folder unless ``config.redis.url``), and ms per track."""
    with tempfile.TemporaryDirectory(prefix="link_bench_redis_") as tmp:
        redis_cfg = config.redis.model_copy(update={"embedded_dir": Path(tmp)})
        if config.redis.url:  # a shared server: a namespace of our own, deleted afterwards
            redis_cfg = redis_cfg.model_copy(update={"namespace": f"link_bench-{uuid.uuid4().hex[:12]}"})
        cfg = config.model_copy(update={"redis": redis_cfg})
        with open_matcher(cfg) as matcher:
            t0 = time.perf_counter()
            results = run_batches(matcher, batches)
            ms = 1e3 * (time.perf_counter() - t0) / max(sum(len(b) for b in batches), 1)
            if config.redis.url:
                client = matcher.store.client
                for key in client.scan_iter(match=f"{redis_cfg.namespace}:*", count=1000):
                    client.delete(key)
    return link_scores(batches, results), ms


def sweep(config: MatcherConfig, batches: Sequence[Sequence[LinkTrack]], thresholds: Sequence[float],
          scenarios: Sequence[tuple[str, float]] = SCENARIOS, seed: int = 0) -> list[dict]:
    """Scores per scenario and threshold (in memory); batch scenarios also with greedy assignment, for comparison
    (in stream mode every batch is one track, so both assignments agree)."""
    rows = []
    for mode, unseen in scenarios:
        fed = scenario(batches, mode, unseen, seed)
        for assignment in ("hungarian", "greedy") if mode == "batch" else (config.assignment,):
            for thr in thresholds:
                cfg = config.model_copy(update={"threshold": float(thr), "assignment": assignment})
                row: dict = run_in_memory(cfg, fed)
                row.update(threshold=float(thr), assignment=assignment, mode=mode, unseen_share=unseen)
                rows.append(row)
    return rows


def best_rows(rows: Sequence[dict], assignment: str) -> dict[str, dict]:
    """Per scenario, the threshold with the best IDF1 (the highest one among ties: fewer merges)."""
    out = {}
    for mode, unseen in sorted({(r["mode"], r["unseen_share"]) for r in rows}):
        sel = [r for r in rows if r["mode"] == mode and r["unseen_share"] == unseen
               and (r["assignment"] == assignment or mode == "stream")]
        best = max(sel, key=lambda r: (round(r["idf1"], 6), r["threshold"]))
        out[f"{mode}/unseen={unseen:g}"] = {"threshold": best["threshold"], "idf1": round(best["idf1"], 4)}
    return out


def plot_sweep(rows: Sequence[dict], path: Path, chosen: float, title: str) -> Path:
    """One panel per scenario: the four scores against the threshold (dotted: greedy assignment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["mode"], r["unseen_share"]) for r in rows})
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 4 * nrows), dpi=100, squeeze=False, sharey=True)
    styles = {"correct_link": "tab:green", "false_merge": "tab:red", "false_new": "tab:orange", "idf1": "tab:blue"}
    for ax, (mode, unseen) in zip(axes.flat, panels, strict=False):
        for assignment, dash in (("hungarian", "-"), ("greedy", ":")):
            sel = [r for r in rows if r["mode"] == mode and r["unseen_share"] == unseen
                   and (r["assignment"] == assignment or (mode == "stream" and dash == "-"))]
            if not sel:
                continue
            x = [r["threshold"] for r in sel]
            for key, color in styles.items():
                if dash == ":" and key not in ("correct_link", "idf1"):
                    continue
                ax.plot(x, [100 * r[key] for r in sel], dash, color=color, markersize=3,
                        marker="o" if dash == "-" else None,
                        label=key + (" (greedy)" if dash == ":" else ""))
        ax.axvline(chosen, color="gray", lw=1, ls="--", label=f"threshold {chosen:.3f}")
        ax.set(xlabel="cosine threshold", ylim=(0, 100),
               title=f"{mode}, {100 * unseen:.0f}% of people unseen by camera 1")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("% of later tracks (IDF1: all tracks)")
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reid.link_bench", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="Market-layout dataset (default: $REID_SHARED/datasets/cuhk03_p1)")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights file (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"cosine threshold (default: MatcherConfig's, {MatcherConfig().threshold})")
    p.add_argument("--margin", type=float, default=None, help=f"default: {MatcherConfig().margin}")
    p.add_argument("--assignment", choices=["hungarian", "greedy"], default="hungarian")
    p.add_argument("--mode", choices=["batch", "stream"], default="batch",
                   help="later cameras' tracks as one simultaneous batch, or one at a time (see above)")
    p.add_argument("--unseen-share", type=float, default=0.0,
                   help="share of people whose camera-1 track is withheld (open world), 0..1")
    p.add_argument("--seed", type=int, default=0, help="which people are withheld, stream order")
    p.add_argument("--redis-url", default=None, help="an existing Redis (default: start a private embedded one)")
    p.add_argument("--num-ids", type=int, default=None, help="only the first N test identities (quick runs)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", type=Path, default=None, help="folder for link_sweep.png and link_sweep.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    from reid.features import extract_embeddings
    from reid.weights import WeightsError, load_model

    data_root = args.data or default_dataset()
    try:
        overrides: dict = {"assignment": args.assignment, "redis": RedisConfig(url=args.redis_url)}
        if args.threshold is not None:
            overrides["threshold"] = args.threshold
        if args.margin is not None:
            overrides["margin"] = args.margin
        config = MatcherConfig(**overrides)
        model = load_model(args.weights, args.device)
        ds = load_market(data_root)
    except (WeightsError, DatasetError, ValueError) as e:
        log.error("%s", e)
        return 2
    samples = ds.query.samples + ds.gallery.samples
    if args.num_ids:
        keep = set(sorted({s.pid for s in samples if s.pid > 0})[: args.num_ids])
        samples = [s for s in samples if s.pid in keep]
    t0 = time.perf_counter()
    embs = extract_embeddings(model, load_images(samples))
    batches = build_tracks(samples, embs)
    log.info("embedded %d crops into %s tracks in %.1f s", len(samples), "+".join(str(len(b)) for b in batches),
             time.perf_counter() - t0)
    if len(batches) < 2:
        log.error("%s: the test crops come from one camera; linking needs two", data_root)
        return 2
    if not 0 <= args.unseen_share < 1:
        log.error("--unseen-share must be in [0, 1), got %s", args.unseen_share)
        return 2
    fed = scenario(batches, args.mode, args.unseen_share, args.seed)
    try:
        scores, ms_per_track = run_on_redis(config, fed)
    except (RedisBinaryNotFound, EmbeddedRedisError) as e:
        log.error("%s", e)
        return 2
    memory = run_in_memory(config, fed)
    if any(abs(memory[k] - scores[k]) > 1e-9 for k in ("correct_link", "false_merge", "false_new", "idf1")):
        log.warning("in-memory store disagrees with Redis at threshold %.3f: %s vs %s", config.threshold, memory,
                    scores)
    scenarios = sorted(set(SCENARIOS) | {(args.mode, args.unseen_share)})
    rows = sweep(config, batches, sorted(set(DEFAULT_SWEEP) | {config.threshold}), scenarios, args.seed)
    best = best_rows(rows, config.assignment)
    log.info("best IDF1 per scenario (threshold, IDF1): %s; matcher %.2f ms per track through Redis",
             ", ".join(f"{k} {v['threshold']:.3f} {v['idf1']:.3f}" for k, v in best.items()), ms_per_track)

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        title = (f"Linking camera 1 -> 2 on {data_root.name}: {args.weights.name}, margin {config.margin}, "
                 f"{config.assignment} (dotted: greedy)")
        plot_sweep(rows, args.out / "link_sweep.png", config.threshold, title)
        (args.out / "link_sweep.json").write_text(json.dumps({"weights": str(args.weights), "rows": rows}, indent=1))
        log.info("wrote %s and %s", args.out / "link_sweep.png", args.out / "link_sweep.json")

    out = {k: round(float(scores[k]), 4) for k in ("correct_link", "false_merge", "false_new", "idf1")}
    out.update(threshold=config.threshold, num_tracks=int(scores["num_tracks"]),
               num_linking_tracks=int(scores["num_linking_tracks"]), num_identities=int(scores["num_identities"]),
               margin=config.margin, assignment=config.assignment, mode=args.mode, unseen_share=args.unseen_share,
               sweep_best=best, ms_per_track=round(ms_per_track, 3), weights=str(args.weights), data=str(data_root))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"data     {data_root}  ({out['num_tracks']} tracks, {out['num_linking_tracks']} to link)")
        print(f"weights  {args.weights}  threshold={config.threshold} margin={config.margin} {config.assignment} "
              f"mode={args.mode} unseen_share={args.unseen_share}")
        print(f"correct_link {100 * out['correct_link']:6.2f}%  false_merge {100 * out['false_merge']:6.2f}%  "
              f"false_new {100 * out['false_new']:6.2f}%  IDF1 {100 * out['idf1']:6.2f}%")
        for name, b in best.items():
            print(f"sweep: best IDF1 {100 * b['idf1']:6.2f}% at threshold {b['threshold']:.3f}  ({name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
