"""One stage per process, wired by tcp endpoints (``run_pipeline.py --stage``, as on several hosts): a source
sends a real recording into a detect stage over tcp, the detect stage's crops arrive on the test's socket, and
both stages log their periodic INFO line although no supervisor is there to show a status line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from pipeline.messages import CropsMsg, decode
from reid.paths import PROJECT_ROOT

from .conftest import free_port, write_config

DETECT_LINE = re.compile(r"detect: (\d+\.\d) fps \| busy +\d+%, input left queued in \d+/\d+ turns \| "
                         r"latency p50 [\d.]+ p95 [\d.]+ ms \| dropped \d+, malformed (\d+)")
SOURCE_LINE = re.compile(r"source:c0: (\d+\.\d) fps \| no input \| latency - \| dropped 0, malformed 0")


def wait_for(path: Path, pattern: re.Pattern, ok, timeout_s: float) -> re.Match:
    """The first line of the log at ``path`` matching ``pattern`` for which ``ok(match)`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for m in pattern.finditer(path.read_text()):
            if ok(m):
                return m
        time.sleep(0.2)
    raise AssertionError(f"no line like {pattern.pattern!r} in {path}:\n{path.read_text()[-3000:]}")


class Downstream(threading.Thread):
    """Stands in for the embed stage on another host: binds the embed endpoint and keeps receiving (a stage
    whose output is not read blocks in its send), decoding what arrives."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.ROUTER)  # a stage's input (pipeline.stage)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.messages: list = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(100):
                self.messages.append(decode(self.sock.recv_multipart()[1:]))  # without the sender's routing id
        self.sock.close()


def test_stages_run_alone_over_tcp_and_log_their_periodic_line(tmp_path, shared):
    detect_in, embed_in = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "alone.yaml", {"c0": shared / "video" / "epfl_campus4" / "campus4-c0.mp4"},
                       detect=detect_in, embed=embed_in)
    ctx = zmq.Context()
    downstream = Downstream(ctx, embed_in)
    downstream.start()
    junk = ctx.socket(zmq.DEALER)
    junk.setsockopt(zmq.LINGER, 1000)
    junk.connect(detect_in)
    logs = {name: tmp_path / f"{name}.log" for name in ("detect", "source")}

    def stage(name: str, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "run_pipeline.py", "--cameras", str(cfg), "--run-dir", str(tmp_path / "run"),
               "--stats-every", "1", "--stage", name, *args]
        with open(logs[name], "w") as log:
            return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log)

    procs = [stage("detect"), stage("source", "--camera", "c0", "--replay", "--speed", "1")]
    try:
        deadline = time.monotonic() + 120
        while not any(m.tracks for m in downstream.messages) and time.monotonic() < deadline:
            time.sleep(0.2)  # until a person is tracked
        got = list(downstream.messages)
        assert any(m.tracks for m in got), logs["detect"].read_text()[-3000:]
        assert all(isinstance(m, CropsMsg) and m.camera_id == "c0" for m in got)
        indices = [m.frame_index for m in got]
        assert indices == list(range(0, 5 * len(got), 5))  # every 5th frame (25 fps, 5 detections/s), in order

        junk.send_multipart([b"not a message"])  # counted as malformed by the detect stage, not fatal
        wait_for(logs["detect"], DETECT_LINE, lambda m: float(m[1]) > 0 and m[2] == "1", 60)
        wait_for(logs["source"], SOURCE_LINE, lambda m: float(m[1]) > 0, 30)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # alone, a stage stops on Ctrl-C and logs its summary
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        downstream.stop.set()
        downstream.join(5)
        junk.close()
        ctx.term()
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs.values()]
    assert "detect finished in" in logs["detect"].read_text()
    assert "source:c0 finished in" in logs["source"].read_text()
