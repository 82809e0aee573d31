"""The identity tracker's cost over a long crowded stream: milliseconds per message at its start and its end, and
Redis writes per second.

    python benchmarks/identity_stream.py [--minutes 10] [--baseline-minutes 2] [--json]

The stream is built from real detections: the crowded terrace1 clip (``$REID_SHARED/video/epfl_terrace1_crowd``,
two calibrated views, 30 s) goes once through the pipeline's own detector and ByteTrack at 25 detections per
second (cached in ``runs/bench_cache``), and its per-frame track reports are replayed in a loop, each loop 30 s
later in video time with new track ids: four cameras (the two views, and the same two played 15 s apart with the
same calibration), 25 messages per second each. Each track's crops get one fixed random embedding per track of the
clip (a person seen again in a later loop joins their identity), so the matcher does real work; the embedding
values do not change the tracker's cost.

Every message goes through ``IdentityTracker.observe`` + ``decide`` against a private embedded Redis (append-only,
``appendfsync always`` as the pipeline's default), with the album on. Rows: the tracker, over the whole stream; the
baseline, measured in the same run over its first minutes: the same tracker made to refresh every placed running
track through the matcher at every decision, which is what the match stage did before the identity core
(each refresh rewrote the identity's record). Columns: median and p99 ms per message over the first and the last
minute of the stream, Redis write commands per second of video, and the ratio of the last minute's median to the
first's (flat: about 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid.identity.album import Album  # noqa: E402
from reid.identity.config import MatcherConfig, RedisConfig  # noqa: E402
from reid.identity.geometry import GeometryConfig, Homography  # noqa: E402
from reid.identity.matcher import Matcher  # noqa: E402
from reid.identity.redis_server import EmbeddedRedis  # noqa: E402
from reid.identity.store import IdentityStore  # noqa: E402
from reid.identity.tracker import IdentityTracker, TrackSummary  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402

CLIP = "epfl_terrace1_crowd"
FPS = 25.0
CLIP_S = 30.0
VIEWS = {"c0": ("c0", 0.0), "c1": ("c1", 0.0), "c2": ("c0", 15.0), "c3": ("c1", 15.0)}  # camera -> (view, offset)
GEOMETRY = GeometryConfig(same_place=30, different_place=75, max_speed=150)  # configs/terrace1.yaml's
WRITE_COMMANDS = {"set", "hset", "del", "sadd", "zadd", "xadd", "incr", "evalsha", "eval", "hdel", "zrem", "exec"}


@dataclass(frozen=True)
class Row:
    """One track row of a frame, as ``pipeline.messages.TrackEntry`` (the tracker's ``Sighting``)."""

    track_id: int
    state: str
    frame_index: int
    ts: float
    xyxy: tuple[float, float, float, float]
    quality: float
    row: int


def clip_reports(view: str) -> list[tuple[float, list[tuple[int, str, tuple, float, bool]]]]:
    """Per frame of one view at 25 fps: (ts, [(track id, state, box, quality, has crop)]), from the detector and
    tracker the pipeline runs (cached)."""
    cache = PROJECT_ROOT / "runs" / "bench_cache" / f"{CLIP}-{view}-reports.json"
    if cache.is_file():
        return [(ts, [tuple(r[:2]) + (tuple(r[2]),) + tuple(r[3:]) for r in rows])  # type: ignore[misc]
                for ts, rows in json.loads(cache.read_text())]
    import cv2

    from detectors import CameraTracker, PersonDetector
    from detectors.types import TrackState

    video = shared_root() / "video" / CLIP / f"terrace1-{view}.mp4"
    if not video.is_file():
        raise SystemExit(f"{video} is missing: set REID_SHARED to the shared data folder")
    detector = PersonDetector(shared_root() / "weights" / "yolo11n_int8_320.onnx", conf=0.35)
    tracker = CameraTracker(view, "bytetrack", frame_rate=FPS, lost_timeout_s=1.5)
    cap = cv2.VideoCapture(str(video))
    out = []
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    for i in tqdm(range(n), desc=f"detect {view}", unit="frame"):
        ok, frame = cap.read()
        if not ok:
            break
        ts = i / FPS
        events = tracker.update(frame, i, ts, detector.detect([frame])[0])
        rows = [(e.track_id, str(e.state), tuple(np.round(e.xyxy, 1).tolist()), round(e.quality, 3), e.has_crop)
                for e in events]
        told = {e.track_id for e in events}
        if tracker.tracks.track_id is not None:
            rows += [(int(t), str(TrackState.ACTIVE), tuple(np.round(b, 1).tolist()), 0.0, False)
                     for t, b in zip(tracker.tracks.track_id.tolist(), tracker.tracks.xyxy, strict=True)
                     if t not in told]
        out.append((ts, rows))
    end = tracker.flush()
    out.append((n / FPS, [(e.track_id, str(e.state), tuple(np.round(e.xyxy, 1).tolist()), round(e.quality, 3),
                           e.has_crop) for e in end]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


class RewritingTracker(IdentityTracker):
    """The baseline: before each decision, every placed running track goes through the matcher again with its
    span as of the decision (the match stage's former ``refresh_active``), rewriting its identity's record."""

    def _decide_at(self, as_of, batch):
        keys = {t.key for t, _ in batch}
        refresh = []
        for key, t in sorted(self.tracks.items()):
            if key in keys or t.global_id is None or not t.matched_crops:
                continue
            last = t.last_seen(as_of)
            if last is not None:
                s = t.summary(t.matched_crops)
                refresh.append(TrackSummary(t.camera_id, t.track_id, t.start_ts, max(last, s.end_ts), s.emb,
                                            s.num_crops, s.quality))
        if refresh:
            self.matcher.match(refresh)
        return super()._decide_at(as_of, batch)


def stream(minutes: float):
    """(camera, ts, rows, embeddings) messages in video-time order."""
    reports = {v: clip_reports(v) for v in ("c0", "c1")}
    rng = np.random.default_rng(0)
    person: dict[tuple[str, int], np.ndarray] = {}
    loops = int(np.ceil(minutes * 60 / CLIP_S)) + 1
    msgs = []
    for cam, (view, offset) in VIEWS.items():
        for k in range(loops):
            for ts, rows in reports[view]:
                t = offset + k * CLIP_S + ts
                if t > minutes * 60:
                    break
                entries, embs = [], []
                for tid, state, box, q, crop in rows:
                    row = -1
                    if crop:
                        e = person.setdefault((view, tid), rng.standard_normal(1024).astype(np.float32))
                        row = len(embs)
                        embs.append(e / np.linalg.norm(e))
                    entries.append(Row(k * 100_000 + tid, state, round(t * FPS), t, box, q, row))
                msgs.append((t, cam, entries, np.stack(embs) if embs else np.zeros((0, 1024), np.float32)))
    msgs.sort(key=lambda m: (m[0], m[1]))
    return msgs


def writes(client) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_") in WRITE_COMMANDS)


def run(tracker_cls: type[IdentityTracker], msgs: list, minutes: float, label: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="identity_stream_") as tmp, \
            EmbeddedRedis(tmp, supervise=False, appendfsync="always") as server:
        cfg = MatcherConfig(redis=RedisConfig(url=server.url))
        store = IdentityStore.from_config(cfg)
        h = {v: Homography.load(shared_root() / "video" / CLIP / f"homography-{v}.txt") for v in ("c0", "c1")}
        tracker = tracker_cls(cfg, Matcher(cfg, store), {c: h[v] for c, (v, _) in VIEWS.items()}, GEOMETRY,
                              album=Album(store), keep_crops=False)
        w0 = writes(store.client)
        per_msg: list[tuple[float, float]] = []
        t_start = time.perf_counter()
        for ts, cam, entries, embs in tqdm([m for m in msgs if m[0] <= minutes * 60], desc=label, unit="msg",
                                           mininterval=2):
            t0 = time.perf_counter()
            tracker.observe(cam, ts, entries, embs)
            tracker.decide()
            per_msg.append((ts, time.perf_counter() - t0))
        wall = time.perf_counter() - t_start
        n_writes = writes(store.client) - w0
        stats = tracker.stats()
        store.close()
    first = [d for t, d in per_msg if t < 60]
    last = [d for t, d in per_msg if t >= minutes * 60 - 60]
    people = statistics.mean(len(e) for _, _, e, _ in msgs[:2000])

    def ms(xs: list[float], q: float) -> float:
        return 1e3 * float(np.quantile(xs, q))

    return {"tracker": label, "video_min": minutes, "messages": len(per_msg), "tracks_per_message": round(people, 1),
            "first_min_median_ms": ms(first, 0.5), "first_min_p99_ms": ms(first, 0.99),
            "last_min_median_ms": ms(last, 0.5), "last_min_p99_ms": ms(last, 0.99),
            "writes_per_video_s": n_writes / (minutes * 60), "writes_per_wall_s": n_writes / wall,
            "identities": stats["identities"], "decisions": stats.get("decisions", 0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/identity_stream.py", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="video minutes through the tracker")
    p.add_argument("--baseline-minutes", type=float, default=2.0, help="video minutes through the baseline (0: none)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    msgs = stream(args.minutes)
    rows = [run(IdentityTracker, msgs, args.minutes, "IdentityTracker")]
    if args.baseline_minutes > 0:
        rows.append(run(RewritingTracker, msgs, min(args.baseline_minutes, args.minutes),
                        "baseline: refresh at every decision"))
    for r in rows:
        r["last_over_first"] = r["last_min_median_ms"] / r["first_min_median_ms"]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"Identity tracker over {len(VIEWS)} cameras x {FPS:.0f} messages/s, real detections of {CLIP} in a loop "
          f"({rows[0]['tracks_per_message']} track rows per message), embedded Redis with appendfsync always, "
          f"{os.cpu_count()} CPUs; baseline in the same run")
    print(f"{'tracker':<38}{'video':>7}{'msgs':>8}{'first min ms':>14}{'last min ms':>13}{'last/first':>11}"
          f"{'writes/s':>10}{'ids':>6}")
    for r in rows:
        print(f"{r['tracker']:<38}{r['video_min']:>5.0f} m{r['messages']:>8}"
              f"{r['first_min_median_ms']:>7.2f} /{r['first_min_p99_ms']:>5.1f}"
              f"{r['last_min_median_ms']:>6.2f} /{r['last_min_p99_ms']:>5.1f}{r['last_over_first']:>11.2f}"
              f"{r['writes_per_video_s']:>10.1f}{r['identities']:>6}")
    print("ms: median / p99 per message (observe + decide); writes/s: Redis write commands per second of video")
    return 0


if __name__ == "__main__":
    sys.exit(main())
