"""Whole-pipeline replay benchmark on the example config (three EPFL views).

    python benchmarks/pipeline_replay.py [--duration 20] [--speeds max 1] [--repeats 1]
    python benchmarks/pipeline_replay.py --service-cost [--repeats 5] [--duration 20]

For each replay speed it prints one row: frames/s per camera and in total (detected frames), the real-time
factor (video seconds per wall second, from the first frame sent to the last event), p50/p95 latency from a
frame leaving its source to the match stage having processed it (where its events are published), identities,
and peak memory (sum of the resident sets of all stage processes, sampled every 0.2 s). Baseline ratio: the
real-time factor relative to the first speed's row, same run.

``--service-cost`` replays at ``--speed max`` with the HTTP service off and on, alternately in ABBA order (off, on,
on, off, ...: a machine whose speed drifts, or a run slowed by the one before it, affects both alike), while one
client does what an open web page and a Prometheus scraper do: cameras and their snapshots every second, the
identity list and its thumbnails every 2 s, ``/metrics`` every 15 s. Rows: medians of each; ratio = real-time
factor / the service-off row's; the ratio of each back-to-back pair is less exposed to a drifting machine, and
its median is printed too. CPU s is all the CPU the
run used (every stage process, Redis, the supervisor with its service thread; the polling client's own CPU is
left out: a browser's, not the service's); it also prints the service thread's share of it. On a 2-core machine
whose speed varies from run to run, the CPU figures show the cost more steadily than wall times do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.service.config import HttpConfig  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT  # noqa: E402


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def thread_cpu_s(native_id: int) -> float:
    """CPU seconds (user + system) one thread of this process has used."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def process_cpu_s() -> float:
    """CPU seconds used by this process and by its children that have been waited for (the stages, Redis)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def page_client(sup: Supervisor, done: threading.Event, requests: list[int], cpu: list[float]) -> None:
    """What one open web page and a Prometheus scraper ask of the service (the page's own refresh periods).
    ``cpu`` gets this client's own CPU seconds: a browser's cost, not the service's, so it is subtracted."""

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"{sup.service.url}{path}", timeout=10) as r:
            requests[0] += 1
            return r.read()

    t = 0
    while not done.wait(1.0):
        if sup.service is None:
            continue
        try:
            for cam in json.loads(get("/api/cameras"))["cameras"]:
                if cam["snapshot"]:
                    get(cam["snapshot"])
            if t % 2 == 0:
                for ident in json.loads(get("/api/identities?limit=50"))["items"]:
                    for thumb in ident["thumbnails"][:1]:
                        get(thumb)
            if t % 15 == 0:
                get("/metrics")
        except OSError:  # the service is stopping at the end of the run
            pass
        t += 1
        cpu[0] = time.thread_time()


def run_once(config_path: Path, speed: float | None, duration: float, port: int, http: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config_path).with_run_dir(Path(tmp))
        cfg = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(
            update={"events": f"tcp://127.0.0.1:{port}"}), "http": HttpConfig(port=0) if http else None})
        sup = Supervisor(cfg, replay=True, speed=speed, duration_s=duration, status=False)
        peak = [0]
        latencies: list[float] = []
        service_cpu = [0.0]
        client_cpu = [0.0]
        requests = [0]
        done = threading.Event()
        cpu0 = process_cpu_s()

        def sample():
            while not done.is_set():
                if sup.service is not None and sup.service.thread.native_id is not None:
                    service_cpu[0] = max(service_cpu[0], thread_cpu_s(sup.service.thread.native_id))
                total = rss_bytes(os.getpid()) + sum(rss_bytes(p.process.pid) for p in sup.procs
                                                      if p.process is not None and p.process.is_alive())
                peak[0] = max(peak[0], total)
                match = next((p for p in sup.procs if p.kind == "match"), None)
                if match and match.stats.get("latency_p50_ms") is not None:
                    latencies.append(match.stats["latency_p95_ms"])
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
        if http:
            threading.Thread(target=page_client, args=(sup, done, requests, client_cpu), daemon=True).start()
        sup.run()
        done.set()
        cpu = process_cpu_s() - cpu0 - client_cpu[0]
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
            "cpu_s": cpu,
            "service_cpu_s": service_cpu[0],
            "requests": requests[0],
        }


def service_cost(args: argparse.Namespace) -> int:
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(args.repeats):
        for http in ((False, True) if i % 2 == 0 else (True, False)):  # ABBA: neither always goes first
            r = run_once(args.config, None, args.duration, args.port, http=http)
            runs[http].append(r)
            print(f"run {i + 1}/{args.repeats}, service {'on ' if http else 'off'}: {r['wall_s']:.1f} s, "
                  f"RT {r['realtime_factor']:.2f}, CPU {r['cpu_s']:.1f} s, {r['identities']} ids, "
                  f"{r['requests']} requests", flush=True)
    print(f"Replay of {args.config.name} at --speed max, {args.duration:g} s per camera, service off and on "
          f"alternately (ABBA), {args.repeats} runs each (medians); {platform.machine()} CPU x{os.cpu_count()}")
    print(f"{'service':>8}{'wall s':>8}{'RT factor':>10}{'min..max RT':>14}{'ids':>5}{'CPU s':>7}"
          f"{'service CPU s':>14}{'requests':>9}{'ratio':>7}")
    base = statistics.median(r["realtime_factor"] for r in runs[False])
    for http in (False, True):
        rs = runs[http]
        rt = [r["realtime_factor"] for r in rs]
        med = {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "identities", "cpu_s", "service_cpu_s",
                                                              "requests")}
        print(f"{'on' if http else 'off':>8}{med['wall_s']:>8.1f}{statistics.median(rt):>10.2f}"
              f"{f'{min(rt):.2f}..{max(rt):.2f}':>14}{med['identities']:>5.0f}{med['cpu_s']:>7.1f}"
              f"{med['service_cpu_s']:>14.2f}{med['requests']:>9.0f}{statistics.median(rt) / base:>7.3f}")
    paired = statistics.median(on["realtime_factor"] / off["realtime_factor"]
                               for on, off in zip(runs[True], runs[False], strict=True))
    print(f"real-time factor on / off, median over the {args.repeats} back-to-back pairs: {paired:.3f}")
    share = statistics.median(r["service_cpu_s"] / r["cpu_s"] for r in runs[True])
    extra = statistics.median(r["cpu_s"] for r in runs[True]) / statistics.median(r["cpu_s"] for r in runs[False])
    print(f"service thread's share of the run's CPU (median over the 'on' runs): {100 * share:.2f} %; "
          f"CPU of the whole run (the client's own excluded), on / off: {extra:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/pipeline_replay.py", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=PROJECT_ROOT / "configs" / "cams.example.yaml")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of video per camera")
    p.add_argument("--speeds", nargs="+", default=["max", "1"])
    p.add_argument("--repeats", type=int, default=1, help="runs per speed (medians reported)")
    p.add_argument("--port", type=int, default=5599)
    p.add_argument("--service-cost", action="store_true",
                   help="compare --speed max with the HTTP service off and on (and a page polling it)")
    args = p.parse_args(argv)
    setup_logging(30)
    if args.service_cost:
        return service_cost(args)
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
