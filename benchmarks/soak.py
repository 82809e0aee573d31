"""Soak test: the example config replayed in a loop for a fixed time, with faults injected on a schedule.

    python benchmarks/soak.py [--minutes 3] [--video-s 20] [--fault-every-s 20]

Faults alternate between SIGKILL of a stage process (detect, embed, match in turn) and SIGKILL of the embedded
Redis server (its supervisor restarts it on the same port and append-only file). All replays share one run
directory, so identities and the event sequence carry over from loop to loop. An outside subscriber counts what
it receives; the table compares that with what was published (the highest sequence number), lists the gaps,
the restarts, the identities in Redis and the memory (peak resident set of all the pipeline's processes and its
Redis) in the first and in the last loop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pipeline_replay import rss_bytes  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT  # noqa: E402


def redis_pid(port: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # redis-server rewrites its title to "redis-server 127.0.0.1:PORT"; before that it is "--port PORT"
        text = b" ".join(argv)
        if b"redis-server" in text and (f":{port}".encode() in text or f"--port {port}".encode() in text):
            return int(proc.name)
    return None


class Counter(threading.Thread):
    """An outside subscriber: counts events and the gaps in their sequence numbers."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.seqs, self.stop = endpoint, [], threading.Event()

    def run(self) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self.endpoint)
        while not self.stop.is_set():
            if sub.poll(100):
                self.seqs.append(json.loads(sub.recv_multipart()[1])["seq"])
        sub.close()
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/soak.py", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=PROJECT_ROOT / "configs" / "cams.example.yaml")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--video-s", type=float, default=20.0, help="seconds of each view per loop")
    p.add_argument("--fault-every-s", type=float, default=20.0)
    p.add_argument("--port", type=int, default=5598)
    args = p.parse_args(argv)
    setup_logging(30)
    end = time.monotonic() + 60 * args.minutes
    faults: list[str] = []
    restarts: dict[str, int] = {}
    mem: list[list[float]] = []  # per loop: resident-set samples while the stages run
    loops = 0
    identities = 0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config).with_run_dir(Path(tmp))
        cfg = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(
            update={"events": f"tcp://127.0.0.1:{args.port}"})})
        counter = Counter(cfg.endpoints.events)
        counter.start()
        next_fault, victims, n_fault = time.monotonic() + args.fault_every_s, ["detect", "embed", "match"], 0
        while time.monotonic() < end:
            sup = Supervisor(cfg, replay=True, speed=None, duration_s=args.video_s, status=False)
            done = threading.Event()
            mem.append([])

            def inject(sup: Supervisor = sup, done: threading.Event = done) -> None:
                nonlocal next_fault, n_fault
                while not done.is_set():
                    time.sleep(0.2)
                    pids = [p.process.pid for p in sup.procs if p.process is not None and p.process.is_alive()]
                    match = next((p for p in sup.procs if p.kind == "match"), None)
                    url = match.kwargs.get("redis_url") if match else None  # set once the run has its Redis
                    port = int(url.rsplit(":", 1)[1].split("/")[0]) if url else None
                    rpid = redis_pid(port) if port else None
                    if pids and sup.t0:
                        total = rss_bytes(os.getpid()) + sum(rss_bytes(x) for x in [*pids, rpid] if x)
                        mem[-1].append(total / 1e6)
                    if time.monotonic() < next_fault or not sup.t0:
                        continue
                    next_fault = time.monotonic() + args.fault_every_s
                    if n_fault % 2 == 1 and rpid:
                        os.kill(rpid, signal.SIGKILL)
                        faults.append("redis")
                    else:
                        kind = victims[(n_fault // 2) % len(victims)]
                        sp = next((p for p in sup.procs if p.kind == kind), None)
                        if sp and sp.process is not None and sp.process.is_alive():
                            os.kill(sp.process.pid, signal.SIGKILL)
                            faults.append(kind)
                    n_fault += 1

            t = threading.Thread(target=inject, daemon=True)
            t.start()
            sup.run()
            done.set()
            t.join(2)
            loops += 1
            for p in sup.procs:
                restarts[p.kind] = restarts.get(p.kind, 0) + p.restarts
            identities = next(p for p in sup.procs if p.kind == "match").stats.get("identities", identities)
        time.sleep(0.5)
        counter.stop.set()
        counter.join(2)
    seqs = sorted(set(counter.seqs))
    published = max(seqs) if seqs else 0
    missing = sorted(set(range(1, published + 1)) - set(seqs))
    print(f"Soak: {args.minutes:g} min, {loops} replays of {args.video_s:g} s x {len(cfg.cameras)} views, "
          f"a fault every {args.fault_every_s:g} s")
    print(f"{'faults':>28} {'restarts':>26} {'published':>9} {'received':>8} {'gaps':>5} {'ids':>4} "
          f"{'mem start MB':>12} {'mem end MB':>10}")
    fault_s = ",".join(f"{k}:{faults.count(k)}" for k in sorted(set(faults))) or "-"
    rest_s = ",".join(f"{k}:{v}" for k, v in sorted(restarts.items()) if v) or "-"
    print(f"{fault_s:>28} {rest_s:>26} {published:>9} {len(seqs):>8} {len(missing):>5} {identities:>4} "
          f"{max(mem[0], default=0):>12.0f} {max(mem[-1], default=0):>10.0f}")
    if missing:
        print(f"missing sequence numbers: {missing[:30]}{' ...' if len(missing) > 30 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
