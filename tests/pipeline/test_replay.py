"""End-to-end replays of the three EPFL views through real processes, ZeroMQ sockets and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from pipeline.events import KINDS, SCHEMA, deterministic_view
from pipeline.supervisor import Supervisor
from reid.paths import PROJECT_ROOT

from .conftest import example_config

DURATION_S = 10.0


def replay(cfg, events_out=None) -> Supervisor:
    sup = Supervisor(cfg, replay=True, speed=None, duration_s=DURATION_S, events_out=events_out, status=False)
    assert sup.run() == 0
    return sup


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> SimpleNamespace:
    """One clean replay (10 s of the three views at 5 detections/s), watched by an outside subscriber; the fault
    tests compare their events with it."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = example_config(tmp / "run", detect_fps=5)
    sub = subprocess.Popen([sys.executable, "-m", "pipeline.subscribe", cfg.endpoints.events, "--timeout", "120"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        time.sleep(1.0)  # the subscriber connects while the stages load their models
        sup = replay(cfg, events_out=tmp / "events.jsonl")
    finally:
        sub.send_signal(signal.SIGINT)
        out, _ = sub.communicate(timeout=30)
    received = [json.loads(line) for line in out.splitlines() if line.strip()]
    return SimpleNamespace(sup=sup, received=received, events_file=tmp / "events.jsonl")


def test_replay_links_identities_across_cameras_and_is_deterministic(reference, make_config):
    first, received = reference.sup, reference.received
    events = first.events
    assert events, "no identity events"
    for e in events:
        assert e["schema"] == SCHEMA and e["kind"] in KINDS
        assert e["camera_id"] in {"c0", "c1", "c2"} and isinstance(e["global_id"], int)
        assert 0 <= e["video_ts"] <= DURATION_S and len(e["box"]) == 4
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    cameras_of = {}
    for e in events:
        cameras_of.setdefault(e["global_id"], set()).add(e["camera_id"])
    assert any(len(c) >= 2 for c in cameras_of.values()), cameras_of
    # two tracks visible at the same time in one camera are never one person
    spans = {}
    for e in events:
        if e["kind"] == "track.ended":
            spans.setdefault((e["camera_id"], e["global_id"]), []).append(
                (e["video_ts"] - e["duration_s"], e["last_seen_ts"]))
    for key, intervals in spans.items():
        intervals.sort()
        for (_, end_a), (start_b, _) in zip(intervals, intervals[1:], strict=False):
            assert start_b >= end_a, f"{key}: overlapping tracks share an identity: {intervals}"
    # an outside subscriber got the same stream, and the JSONL file holds it too
    assert [e["seq"] for e in received] == [e["seq"] for e in events]
    assert [json.loads(line) for line in reference.events_file.read_text().splitlines()] == events
    # every camera's frames went through detection
    det = next(p for p in first.procs if p.kind == "detect").stats["counters"]
    assert det["frames"] == 3 * DURATION_S * 5

    second = replay(make_config("second", detect_fps=5))
    assert [deterministic_view(e) for e in second.events] == [deterministic_view(e) for e in events]


def test_killed_stage_is_restarted_and_the_run_completes(make_config):
    cfg = make_config("kill", detect_fps=5)
    sup = Supervisor(cfg, replay=True, speed=None, duration_s=DURATION_S, status=False)
    killed = {}

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            det = next((p for p in sup.procs if p.kind == "detect"), None)
            if det and det.stats.get("counters", {}).get("frames", 0) >= 20 and det.process.is_alive():
                killed["pid"] = det.process.pid
                os.kill(det.process.pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    assert sup.run() == 0
    t.join(1)
    assert "pid" in killed, "the detect stage was never killed"
    det = next(p for p in sup.procs if p.kind == "detect")
    assert det.restarts == 1 and det.instance == 1
    match = next(p for p in sup.procs if p.kind == "match")
    assert match.done and set(match.stats["ended"]) == {"c0", "c1", "c2"}
    assert [e["seq"] for e in sup.events] == list(range(1, len(sup.events) + 1))
    # the restarted instance (its reports replace the first's) went on with the remaining frames
    assert det.stats["instance"] == 1 and det.stats["counters"]["frames"] > 0
    # its tracks live in their own id range: no collision with the first instance's
    assert all(e["track_id"] < 1_000_000 or e["track_id"] // 1_000_000 == 1 for e in sup.events)


def test_redis_killed_mid_run_loses_and_duplicates_no_identity(reference, make_config):
    """SIGKILL of the embedded Redis as soon as the first identity was minted: its supervisor restarts it from the
    append-only file, the match stage's commands wait and retry, and the run ends with exactly the clean run's
    events: no identity lost, none minted twice, sequence numbers consecutive."""
    sup = Supervisor(make_config("redis-kill", detect_fps=5), replay=True, speed=None, duration_s=DURATION_S,
                     status=False)
    killed = []
    # Redis servers this test process already runs (another module's session fixture) are not the pipeline's
    others = {c.pid for c in psutil.Process().children(recursive=True) if c.name() == "redis-server"}

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not sup.events:
            time.sleep(0.02)
        for child in psutil.Process().children(recursive=True):
            if child.name() == "redis-server" and child.pid not in others:
                child.kill()
                killed.append(len(sup.events))

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    assert sup.run() == 0
    t.join(1)
    assert len(killed) == 1, "the embedded Redis was not found and killed"
    assert killed[0] < len(sup.events), "the kill came after the last event: nothing was tested"
    assert [deterministic_view(e) for e in sup.events] == [deterministic_view(e) for e in reference.sup.events]


def test_ctrl_c_drains_the_stages_and_exits_cleanly(tmp_path, shared):
    """A file played as a live camera, stopped with SIGINT: the sources end their streams, every stage drains
    and exits, the embedded Redis stops, exit code 0."""
    from .conftest import write_config

    video = shared / "video" / "epfl_campus4"
    cfg = write_config(tmp_path / "live.yaml", {c: video / f"campus4-{c}.mp4" for c in ("c0", "c1")})
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--cameras", str(cfg), "--run-dir",
                             str(tmp_path / "run"), "--no-status"], cwd=PROJECT_ROOT, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    try:
        for line in proc.stderr:  # wait until frames flow
            lines.append(line)
            if "cameras streaming" in line or len(lines) > 400:
                break
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 0, log[-3000:]
    assert "stopping: sources end their streams" in log
    for stage in ("detect", "embed", "match"):
        assert f"{stage} finished in" in log
    assert "stopping embedded Redis" in log
