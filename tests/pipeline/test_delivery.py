"""No message lost and no run that waits forever: a finished stage delivers its whole queue to a slower next stage;
a lost end of stream ends the run with an error naming the stage; a stop ends any run within 10 s."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pipeline.events import ENDED
from pipeline.lifecycle import PipelineError
from pipeline.match_stage import MatchStage
from pipeline.messages import EmbeddingsMsg
from pipeline.stage import STOP_LINGER_MS, Stage
from pipeline.supervisor import Supervisor
from reid.identity.redis_server import redis_url_for
from tests.scenes import scene

from .conftest import example_config
from .stalling import WithholdingEmbedStage


class SlowMatchStage(MatchStage):
    """The real match stage, slowed on purpose: it takes ``delay_s`` per message."""

    delay_s = 0.25

    def handle(self, msg):
        time.sleep(self.delay_s)
        self.counters["frames_in"] += isinstance(msg, EmbeddingsMsg)
        super().handle(msg)


class Feeder(Stage):
    """An upstream stage that sends its messages as fast as the next stage takes them, then every end of stream,
    and finishes normally (its output queue is what must not be lost)."""

    name = "feeder"
    output = "match"

    def __init__(self, config, msgs):
        super().__init__(config)
        self.msgs = msgs
        self.closed_after_s = None

    def run(self):
        for m in self.msgs:
            self.send(m)
        for cam in ("c0", "c1", "c2"):
            self.forward_end(cam)

    def run_and_close(self):
        self.open_sockets()
        self.run()
        t0 = time.monotonic()
        self.close_sockets()
        self.closed_after_s = time.monotonic() - t0


def test_a_slowed_match_stage_receives_every_message_and_finishes(tmp_path):
    msgs, _ = scene()
    cfg = example_config(tmp_path / "run")
    with redis_url_for(cfg.matcher.redis) as url:
        stage = SlowMatchStage(cfg, redis_url=url)
        stage.open_sockets()
        stage.setup()
        runner = threading.Thread(target=stage.run, daemon=True)
        runner.start()
        feeder = Feeder(cfg, msgs)
        sender = threading.Thread(target=feeder.run_and_close, daemon=True)
        sender.start()
        sender.join(120)
        runner.join(120)
        try:
            assert not sender.is_alive() and not runner.is_alive(), "the replay did not finish"
            # The feeder finished seconds before the match stage caught up, and waited for its queue to be taken.
            assert feeder.closed_after_s > STOP_LINGER_MS / 1e3, feeder.closed_after_s
            assert stage.counters["frames_in"] == len(msgs) == feeder.counters["sent"] - 3
            assert stage.finished() and stage.tracker.finished
            assert stage.counters[ENDED] == 4 and stage.counters["malformed"] == 0
        finally:
            stage.teardown()
            stage.close_sockets()


def withholding_supervisor(tmp_path, stall_timeout_s: float, duration_s: float) -> Supervisor:
    cfg = example_config(tmp_path / "run", detect_fps=5)
    cfg = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(update={"stall_timeout_s": stall_timeout_s})})
    sup = Supervisor(cfg, replay=True, speed=None, duration_s=duration_s, status=False)
    next(p for p in sup.procs if p.kind == "embed").cls = WithholdingEmbedStage
    return sup


@pytest.mark.slow
def test_a_withheld_end_of_stream_is_reported_and_the_run_ends(tmp_path):
    sup = withholding_supervisor(tmp_path, stall_timeout_s=3.0, duration_s=2.0)
    with pytest.raises(PipelineError, match=r"stage match still waits for the end of stream of \['c0', 'c1', 'c2'\]"):
        sup.run()
    assert not any(p.alive for p in sup.procs)


@pytest.mark.slow
def test_a_stop_ends_a_run_that_cannot_drain_within_10_s(tmp_path):
    """Ctrl-C on a run whose match stage will never see its end of stream: it ends within 10 s anyway."""
    sup = withholding_supervisor(tmp_path, stall_timeout_s=600.0, duration_s=60.0)
    stopped = {}

    def interrupt():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            det = next(p for p in sup.procs if p.kind == "detect")
            if det.stats.get("counters", {}).get("frames", 0) >= 10:
                stopped["at"] = time.monotonic()
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    sup.run()
    took = time.monotonic() - stopped["at"]
    assert took < 10.0, f"the run ended {took:.1f} s after Ctrl-C"
    assert not any(p.alive for p in sup.procs)


def test_a_stage_told_to_stop_does_not_hang_on_a_next_stage_that_is_gone(tmp_path):
    """Back-pressure waits for the next stage, but not once a stage running alone is told to stop: with nobody
    reading its output (the next stage exited first), a blocked send gives up and is counted. A supervised
    source told to stop is draining the run, so it waits on, until a second stop signal."""
    msgs, _ = scene()
    cfg = example_config(tmp_path / "run")  # nobody binds the match endpoint: every send finds the queue full
    for supervised, drains in ((False, False), (True, True)):
        feeder = Feeder(cfg, msgs)
        feeder.options["supervised"] = supervised
        feeder.drain_on_stop = drains
        feeder.open_sockets()
        try:
            while feeder.send(msgs[0], block=False):  # fill the queue no stage reads
                pass
            result = []
            sender = threading.Thread(target=lambda f=feeder, r=result: r.append(f.send(msgs[0])), daemon=True)
            sender.start()
            time.sleep(0.3)
            assert sender.is_alive()  # blocked: back-pressure
            feeder.stop.set()
            sender.join(2)
            if drains:
                assert sender.is_alive()  # a draining source waits for the run to read it
                feeder.abandon.set()
                sender.join(2)
            assert not sender.is_alive() and result == [False]
            assert feeder.counters["unsent_at_stop"] == 1
        finally:
            feeder.abandon.set()
            feeder.close_sockets()
