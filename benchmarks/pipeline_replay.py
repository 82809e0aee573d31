"""Whole-pipeline replay benchmark on the example config (three EPFL views).

    python benchmarks/pipeline_replay.py [--duration 20] [--speeds max 1] [--repeats 1]

For each replay speed it prints one row: frames/s per camera and in total (detected frames), the real-time
factor (video seconds per wall second, from the first frame sent to the last event), p50/p95 latency from a
frame leaving its source to the match stage having processed it (where its events are published), identities,
and peak memory (sum of the resident sets of all stage processes, sampled every 0.2 s). Baseline ratio: the
real-time factor relative to the first speed's row, same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.stage import setup_logging  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402
from reid.paths import PROJECT_ROOT  # noqa: E402


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_once(config_path: Path, speed: float | None, duration: float, port: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config_path).with_run_dir(Path(tmp))
        cfg = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(
            update={"events": f"tcp://127.0.0.1:{port}"})})
        sup = Supervisor(cfg, replay=True, speed=speed, duration_s=duration, status=False)
        peak = [0]
        latencies: list[float] = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                total = rss_bytes(os.getpid()) + sum(rss_bytes(p.process.pid) for p in sup.procs
                                                      if p.process is not None and p.process.is_alive())
                peak[0] = max(peak[0], total)
                match = next((p for p in sup.procs if p.kind == "match"), None)
                if match and match.stats.get("latency_p50_ms") is not None:
                    latencies.append(match.stats["latency_p95_ms"])
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
        sup.run()
        done.set()
        match_proc = next(p for p in sup.procs if p.kind == "match")
        wall = (match_proc.done_at or time.monotonic()) - sup.t0  # sources started -> last decision made
        match = match_proc.stats
        det = next(p for p in sup.procs if p.kind == "detect").stats["counters"]
        per_cam = {p.key.split(":")[1]: p.stats.get("counters", {}).get("frames", 0) / wall
                   for p in sup.procs if p.kind == "source"}
        return {
            "speed": "max" if speed is None else f"{speed:g}",
            "wall_s": wall,
            "fps_per_camera": per_cam,
            "fps_total": det.get("frames", 0) / wall,
            "realtime_factor": duration / wall,
            "latency_p50_ms": match.get("latency_p50_ms"),
            "latency_p95_ms": match.get("latency_p95_ms"),
            "identities": len(sup.identities),
            "multi_camera": sum(len(c) > 1 for c in sup.identities.values()),
            "events": len(sup.events),
            "peak_rss_mb": peak[0] / 1e6,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/pipeline_replay.py", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=PROJECT_ROOT / "configs" / "cams.example.yaml")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of video per camera")
    p.add_argument("--speeds", nargs="+", default=["max", "1"])
    p.add_argument("--repeats", type=int, default=1, help="runs per speed (medians reported)")
    p.add_argument("--port", type=int, default=5599)
    args = p.parse_args(argv)
    setup_logging(30)
    rows = []
    for s in args.speeds:
        runs = [run_once(args.config, None if s == "max" else float(s), args.duration, args.port)
                for _ in range(args.repeats)]
        med = {k: statistics.median([r[k] for r in runs]) for k in ("wall_s", "fps_total", "realtime_factor",
                                                                      "peak_rss_mb", "identities", "multi_camera")}
        lat = [r for r in runs if r["latency_p95_ms"] is not None]
        med["latency_p50_ms"] = statistics.median([r["latency_p50_ms"] for r in lat]) if lat else float("nan")
        med["latency_p95_ms"] = statistics.median([r["latency_p95_ms"] for r in lat]) if lat else float("nan")
        med["fps_per_camera"] = " ".join(f"{c}:{statistics.median([r['fps_per_camera'][c] for r in runs]):.1f}"
                                         for c in runs[0]["fps_per_camera"])
        med["speed"] = s
        rows.append(med)
    base = rows[0]["realtime_factor"]
    print(f"Pipeline replay of {args.config.name}, {args.duration:g} s per camera, {args.repeats} run(s) per row; "
          f"{platform.machine()} CPU x{os.cpu_count()}; ratio = real-time factor / first row's")
    print(f"{'speed':>6}{'wall s':>8}{'fps/camera':>26}{'fps total':>10}{'RT factor':>10}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'ids':>5}{'multi':>6}{'peak MB':>9}{'ratio':>7}")
    for r in rows:
        print(f"{r['speed']:>6}{r['wall_s']:>8.1f}{r['fps_per_camera']:>26}{r['fps_total']:>10.1f}"
              f"{r['realtime_factor']:>10.2f}{r['latency_p50_ms']:>8.0f}{r['latency_p95_ms']:>8.0f}"
              f"{r['identities']:>5.0f}{r['multi_camera']:>6.0f}{r['peak_rss_mb']:>9.0f}"
              f"{r['realtime_factor'] / base:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
