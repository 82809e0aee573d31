"""The supervisor's parts without a run: the signal handler only sets events, the records kept in memory stay
bounded, and a stage over its real sockets logs its periodic line."""

from __future__ import annotations

import logging
import signal
import time

from pipeline.events import NEW, make_event
from pipeline.recorder import EventRecorder
from pipeline.stage import LATENCY_WINDOW
from pipeline.supervisor import Supervisor, set_aside_replay_store

from .conftest import EchoStage, example_config, running


def test_signal_handler_only_sets_the_stop_events(tmp_path):
    sup = Supervisor(example_config(tmp_path / "run"), status=False)
    sup.signals.on_signal(signal.SIGINT, None)
    assert sup.signals.stop.is_set() and not sup.signals.abort.is_set()
    assert not sup.stages.draining and not sup.stages.aborted  # the main loop acts on it, not the handler
    sup.signals.on_signal(signal.SIGTERM, None)
    assert sup.signals.abort.is_set()
    sup.act_on_signals()  # what the loop does next: kill (no process was started: nothing to kill)
    assert sup.stages.aborted and not sup.stages.restarts_allowed
    assert [p.key for p in sup.procs] == ["match", "embed", "detect", "source:c0", "source:c1", "source:c2"]


def test_event_record_is_bounded_in_memory(tmp_path):
    recorder = EventRecorder(tmp_path / "events.jsonl", spill_cameras={"c0"}, keep=10, keep_ids=5)
    recorder.open()
    for seq in range(1, 101):
        recorder.record(make_event(NEW, seq, "c0" if seq % 2 else "c1", seq, seq // 2, seq / 10, seq, None))
    recorder.close()
    assert recorder.count == 100 and [e["seq"] for e in recorder.recent] == list(range(91, 101))
    assert list(recorder.identities) == [46, 47, 48, 49, 50]  # the identities seen last
    assert recorder.identities[49] == {"c0", "c1"} and recorder.multi_camera == 4
    assert [e["seq"] for e in recorder.spilled()] == list(range(1, 101, 2))  # every event of c0, on disk


def test_stage_logs_its_periodic_line_and_keeps_a_bounded_latency_window(tmp_path, caplog):
    stage = EchoStage(example_config(tmp_path / "run"), log_every_s=0.3)
    stage.latency_ms.extend(float(i) for i in range(3 * LATENCY_WINDOW))
    assert len(stage.latency_ms) == LATENCY_WINDOW and stage.stats()["latency_p50_ms"] >= 2 * LATENCY_WINDOW
    with caplog.at_level(logging.INFO, logger="pipeline.stage"), running(stage) as (push, _):
        push.send_multipart([b"garbage"])
        push.send_multipart([b"more", b"garbage"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("malformed 2" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith("echo")]
    assert any("malformed 2" in line for line in lines), lines
    assert all(" fps | busy " in line and "latency p50 " in line for line in lines), lines


def test_a_replay_starts_from_an_empty_store_and_keeps_the_earlier_one_aside(tmp_path):
    """A replay's video times restart at 0: an earlier run's identities would hold tracks seen "at the same time" in
    the same cameras. Its embedded store is set aside (the latest only); an external Redis is never touched."""
    cfg = example_config(tmp_path / "run")
    data = cfg.matcher.redis.embedded_dir
    set_aside_replay_store(cfg)  # nothing there yet: nothing to do
    assert not data.exists()
    for generation in ("first", "second"):
        data.mkdir(parents=True)
        (data / "appendonly.aof").write_text(generation)
        set_aside_replay_store(cfg)
        assert not data.exists() and (data.parent / "redis.previous" / "appendonly.aof").read_text() == generation
    data.mkdir()
    (data / "appendonly.aof").write_text("external")
    external = cfg.matcher.model_copy(update={"redis": cfg.matcher.redis.model_copy(update={"url": "redis://x/0"})})
    set_aside_replay_store(cfg.model_copy(update={"matcher": external}))
    assert (data / "appendonly.aof").read_text() == "external"
