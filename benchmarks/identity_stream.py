"""The identity tracker's cost over a long crowded stream: milliseconds per message at its start and its end, and
Redis writes per second.

    python benchmarks/identity_stream.py [--minutes 10] [--baseline-minutes 2] [--repeats 3] [--json]

The stream is built from real detections: the crowded terrace1 clip (``$REID_SHARED/video/epfl_terrace1_crowd``, two
calibrated views, 30 s) goes once through the pipeline's own detector and ByteTrack at 25 detections per second
(cached in ``runs/bench_cache``), and its per-frame track reports are replayed in a loop, each loop 30 s later in
video time with new track ids. Each camera shows one view's people twice over, the clip and the clip 15 s later
overlaid (about 10 people per frame), and there are four cameras: the two views, and the same two with the overlays
shifted by 7.5 s and their ground moved 10,000 units away: two pairs of overlapping views in two places of one site;
25 messages per second each. Embeddings are synthetic but behave like a person's: each track takes the ground-truth
person its boxes overlap most (used here only to make the stream realistic; the tracker never sees it), each
person has a random direction per place, layer and loop (each loop brings new people, as on a busy site: the
gallery grows by about two identities a second), and each camera sees it with its own perturbation (cosine about
0.8 across views, as the same person through two cameras); a track with no ground-truth person gets a direction of
its own. So the matcher links views and defers close calls.

Every message goes through ``IdentityTracker.observe`` + ``decide`` against a private embedded Redis (append-only,
``appendfsync always`` as the pipeline's default), with the album on, and each outcome takes an event number from
the store as the match stage's events do. Rows: the tracker, over the whole stream; the
baseline, measured in the same run over its first minutes: the same tracker made to refresh every placed running
track through the matcher at every decision, which is what the match stage did before the identity core
(each refresh rewrote the identity's record). Columns: mean and p99 ms per message over the first and the last
minute of the stream, the ratio of the last minute's mean to the first's (flat: about 1), atomic writes and the
Redis write commands in them per second of video.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.messages import TrackEntry  # noqa: E402
from reid.identity.album import Album  # noqa: E402
from reid.identity.config import MatcherConfig, RedisConfig  # noqa: E402
from reid.identity.geometry import Homography  # noqa: E402
from reid.identity.matcher import Matcher  # noqa: E402
from reid.identity.redis_server import EmbeddedRedis  # noqa: E402
from reid.identity.store import IdentityStore  # noqa: E402
from reid.identity.tracker import IdentityTracker, TrackSummary  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402

CLIP = "epfl_terrace1_crowd"
FPS = 25.0
CLIP_S = 30.0
# camera -> (view, its two overlaid offsets in the clip in seconds, its place on the site)
VIEWS = {"c0": ("c0", (0.0, 15.0), 0), "c1": ("c1", (0.0, 15.0), 0),
         "c2": ("c0", (7.5, 22.5), 1), "c3": ("c1", (7.5, 22.5), 1)}
PLACE_OFFSET = 10_000.0  # ground units between the two places
SITE = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml")  # the clip's calibration and ground rules
GEOMETRY = SITE.geometry
WRITE_COMMANDS = {"set", "hset", "del", "sadd", "zadd", "xadd", "incr", "hdel", "zrem", "expire"}


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


def track_people(view: str, reports: list) -> dict[int, int]:
    """Each track of the clip -> the ground-truth person its boxes overlap most (IoU >= 0.3), or -1."""
    from pipeline.evaluate_mtmc import read_mot

    gt = read_mot(shared_root() / "video" / CLIP / "gt" / f"{view}.txt")
    votes: dict[int, dict[int, int]] = {}
    for f, (_, rows) in enumerate(reports):
        ids, boxes = gt.ids.get(f + 1), gt.boxes.get(f + 1)
        if ids is None:
            continue
        g = np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]
        for tid, _, box, _, _ in rows:
            b = np.asarray(box)
            w = np.clip(np.minimum(g[:, 2], b[2]) - np.maximum(g[:, 0], b[0]), 0, None)
            h = np.clip(np.minimum(g[:, 3], b[3]) - np.maximum(g[:, 1], b[1]), 0, None)
            inter = w * h
            iou = inter / ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
            k = int(np.argmax(iou))
            if iou[k] >= 0.3:
                v = votes.setdefault(tid, {})
                v[int(ids[k])] = v.get(int(ids[k]), 0) + 1
    return {tid: max(v, key=v.get) for tid, v in votes.items()}


def stream(minutes: float):
    """(ts, camera, rows, embeddings) messages in video-time order."""
    reports = {v: clip_reports(v) for v in ("c0", "c1")}
    people = {v: track_people(v, reports[v]) for v in reports}
    rng = np.random.default_rng(0)
    directions: dict[tuple, np.ndarray] = {}

    def direction(key: tuple) -> np.ndarray:
        if key not in directions:
            d = rng.standard_normal(1024).astype(np.float32)
            directions[key] = d / np.linalg.norm(d)
        return directions[key]

    def embedding(cam: str, view: str, place: int, layer: int, loop: int, tid: int) -> np.ndarray:
        pid = people[view].get(tid, -1)
        if pid < 0:
            return direction(("track", cam, layer, loop, tid))
        e = direction(("person", place, layer, loop, pid)) + 0.5 * direction(("view", cam, layer, loop, pid))
        return e / np.linalg.norm(e)

    frames = int(minutes * 60 * FPS)
    n = len(reports["c0"])
    msgs = []
    for cam, (view, offsets, place) in VIEWS.items():
        clip = reports[view]
        for f in range(frames):
            t = f / FPS
            entries, embs = [], []
            for layer, offset in enumerate(offsets):
                g = f + round(offset * FPS)  # frame of the looped clip, and which loop it is in
                loop, (_, rows) = divmod(g, n)[0], clip[g % n]
                for tid, state, box, q, crop in rows:
                    row = -1
                    if crop:
                        row = len(embs)
                        embs.append(embedding(cam, view, place, layer, loop, tid))
                    uid = loop * 40_000 + layer * 20_000 + tid  # below 1e6: one detector's id range
                    entries.append(TrackEntry(uid, state, f, t, box, 1.0, q, (), row))
            msgs.append((t, cam, entries, np.stack(embs) if embs else np.zeros((0, 1024), np.float32)))
    msgs.sort(key=lambda m: (m[0], m[1]))
    return msgs


def homographies() -> dict[str, Homography]:
    """Each camera's calibration: its view's, its ground moved to its place."""
    out = {}
    for cam, (view, _, place) in VIEWS.items():
        h = next(c for c in SITE.cameras if c.id == view).ground()  # ground_offset included
        out[cam] = h.translated(place * PLACE_OFFSET, 0.0)
    return out


def write_commands(client) -> int:
    """Write commands Redis ran, those inside transactions and scripts included."""
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_") in WRITE_COMMANDS)


def run(tracker_cls: type[IdentityTracker], msgs: list, minutes: float, label: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="identity_stream_") as tmp, \
            EmbeddedRedis(tmp, supervise=False, appendfsync="always") as server:
        cfg = MatcherConfig(redis=RedisConfig(url=server.url))
        store = IdentityStore.from_config(cfg)
        tracker = tracker_cls(cfg, Matcher(cfg, store), homographies(), GEOMETRY, album=Album(store), keep_crops=False)
        c0 = write_commands(store.client)
        per_msg: list[tuple[float, float]] = []
        events = 0
        for ts, cam, entries, embs in tqdm([m for m in msgs if m[0] < minutes * 60], desc=label, unit="msg",
                                           mininterval=2):
            t0 = time.perf_counter()
            tracker.observe(cam, ts, entries, embs)
            for _ in tracker.decide():  # as the match stage: each outcome is an event with the next number
                store.next_event_seq()
                events += 1
            per_msg.append((ts, time.perf_counter() - t0))
        commands = write_commands(store.client) - c0
        # Atomic writes: identity records (one change-log entry each: create, attach, expire), album records,
        # event numbers.
        stats = tracker.stats()
        atomic = store.client.xlen(store.key("log", "changes")) + stats["counters"].get("album_writes", 0) + events
        store.close()
    first = [d for t, d in per_msg if t < 60]
    last = [d for t, d in per_msg if t >= minutes * 60 - 60]
    rows = statistics.mean(len(e) for _, _, e, _ in msgs)  # track rows per message
    video_s = minutes * 60
    return {"tracker": label, "video_min": minutes, "messages": len(per_msg), "rows_per_message": round(rows, 1),
            "first_min_mean_ms": 1e3 * statistics.mean(first), "first_min_p99_ms": 1e3 * np.quantile(first, 0.99),
            "last_min_mean_ms": 1e3 * statistics.mean(last), "last_min_p99_ms": 1e3 * np.quantile(last, 0.99),
            "writes_per_s": atomic / video_s, "write_commands_per_s": commands / video_s,
            "identities": stats["identities"], "decisions": stats["counters"].get("decisions", 0),
            "deferred": stats["counters"].get("deferred_tracks", 0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/identity_stream.py", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="video minutes through the tracker")
    p.add_argument("--baseline-minutes", type=float, default=2.0, help="video minutes through the baseline (0: none)")
    p.add_argument("--repeats", type=int, default=3, help="runs per row; the table shows their medians")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    msgs = stream(args.minutes)
    plan = [(IdentityTracker, args.minutes, "IdentityTracker")]
    if args.baseline_minutes > 0:
        plan.append((RewritingTracker, min(args.baseline_minutes, args.minutes), "baseline: refresh at every decision"))
    rows = []
    for cls, minutes, label in plan:
        runs = [run(cls, msgs, minutes, label) for _ in range(args.repeats)]
        rows.append({k: statistics.median(r[k] for r in runs) if isinstance(v, float) else v
                     for k, v in runs[0].items()})
    for r in rows:
        r["last_over_first"] = r["last_min_mean_ms"] / r["first_min_mean_ms"]
        r["ratio_to_baseline"] = r["first_min_mean_ms"] / rows[-1]["first_min_mean_ms"]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"Identity tracker over {len(VIEWS)} cameras x {FPS:.0f} messages/s, real detections of {CLIP} in a loop "
          f"({rows[0]['rows_per_message']} track rows per message), embedded Redis (appendfsync always), "
          f"{os.cpu_count()} CPUs; medians of {args.repeats} runs per row; baseline in the same run")
    print(f"{'tracker':<37}{'video':>6}{'msgs':>7}{'1st min ms':>14}{'last min ms':>14}{'last/1st':>9}"
          f"{'vs base':>8}{'writes/s':>9}{'cmds/s':>8}{'ids':>5}")
    for r in rows:
        print(f"{r['tracker']:<37}{r['video_min']:>4.0f} m{r['messages']:>7}"
              f"{r['first_min_mean_ms']:>7.2f} /{r['first_min_p99_ms']:>5.1f}"
              f"{r['last_min_mean_ms']:>7.2f} /{r['last_min_p99_ms']:>5.1f}{r['last_over_first']:>9.2f}"
              f"{r['ratio_to_baseline']:>8.2f}{r['writes_per_s']:>9.1f}{r['write_commands_per_s']:>8.0f}"
              f"{r['identities']:>5}")
    print("ms: mean / p99 per message (observe + decide + event numbers); vs base: first-minute mean over the "
          "baseline's; writes/s: atomic writes (identity records, album records, event numbers) per second of "
          "video; cmds/s: Redis write commands inside them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
