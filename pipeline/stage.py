"""The stage process: one job, one input socket, one output, reporting to the supervisor.

A stage runs in its own process. ``setup()`` runs in the child (models are built there, never pickled across);
``run()`` polls the input with a 100 ms timeout, hands each decoded message to ``handle()``, and sends one
report per second to the supervisor's control socket (counts, rates, latency). Every ``log_every_s`` (10 s)
the stage also logs one INFO line of its own (fps, load, latency, drops), so a stage run alone with
``run_pipeline.py --stage`` says how it is doing without a supervisor. A message that does not decode is
dropped and counted, never fatal. Signal handlers only set the stop flag. The stage logs a summary on exit.

Stages are joined by DEALER (sender, connects) -> ROUTER (receiver, binds) sockets, used one way like PUSH/PULL
with one addition: the receiver acknowledges each end of stream as it reads it. ZeroMQ drops the messages a
receiver has queued but not read yet when their sender disconnects (seen here: 8 of 3,004 messages, the end of
stream among them, when the match stage was seconds behind), whatever the sender's linger. So a stage that
finishes keeps its connection until every end of stream it sent was acknowledged - by then the next stage has
read everything before it, however far behind it was - sending unacknowledged ones again now and then (a
restarted next stage lost them). Told to stop, it waits no longer than 2 s, except a supervised source, whose stop
ends its stream (the run drains, within the supervisor's deadline); a second stop signal ends any wait. The same
holds for a send blocked by back-pressure: told to stop, the stage gives the message up (counted as
``unsent_at_stop``) rather than hang on a next stage that may be gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from pipeline.config import PipelineConfig
from pipeline.messages import EndMsg, MessageError, Msg, decode, encode
from pipeline.security import CurveGuard
from reid.log import setup_logging

log = logging.getLogger(__name__)

POLL_MS = 100
STOP_LINGER_MS = 2_000
END_ACK = b"reid.end-ack"  # receiver -> sender: [END_ACK, camera id], once it has read that camera's end of stream
ACK_RESEND_S = 10.0  # a finished stage sends an unacknowledged end of stream again this often
DELIVERY_LOG_EVERY_S = 10.0  # a finished stage still waiting for its acknowledgements says so this often
REPORT_EVERY_S = 1.0
LOG_EVERY_S = 10.0  # default period of a stage's own INFO line
LATENCY_WINDOW = 200  # latency samples kept for the percentiles (a bounded window, never the whole run)
# counters of messages, frames or parts of messages a stage dropped (summed as "dropped" in its INFO line)
DROP_COUNTERS = ("dropped_frames", "bad_frames", "bad_crops", "bad_embeddings", "bad_tracks", "unknown_camera",
                 "unexpected")


class LatencySamples(deque):
    """The latency window, counting every sample ever appended, so each report can carry the samples that are new
    since the previous one (the supervisor's Prometheus histograms observe each sample once)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen=maxlen)
        self.total = 0
        self.reported = 0

    def append(self, value: float) -> None:
        super().append(value)
        self.total += 1

    def take_new(self) -> list[float]:
        n = min(self.total - self.reported, len(self))
        self.reported = self.total
        return list(self)[len(self) - n:] if n else []


def bind_dir(endpoint: str) -> None:
    """Create the folder of an ipc:// endpoint."""
    if endpoint.startswith("ipc://"):
        os.makedirs(os.path.dirname(endpoint[len("ipc://"):]) or ".", exist_ok=True)


@dataclass
class LoadMeter:
    """How loaded a stage with an input is: the time its loop spent waiting for messages, and how many of its
    turns ended with messages still queued at the input (ZeroMQ does not tell a queue's length; a stage that
    keeps leaving messages behind is the one the pipeline waits for)."""

    waited_s: float = 0.0
    turns: int = 0
    turns_behind: int = 0


@dataclass(frozen=True)
class LogWindow:
    """Totals at the start of the current INFO-line window; the line reports what changed since."""

    t: float
    processed: int
    load: LoadMeter


class Stage:
    """Base class of every stage. Subclasses set ``name``, ``input``/``output`` endpoint names and implement
    :meth:`handle`; sources override :meth:`run`."""

    name = "stage"
    input: str | None = None  # endpoint name this stage binds a PULL socket to
    max_drain = 256  # messages taken from the input per turn; small where messages are big (frames)
    output: str | None = None  # endpoint name this stage connects its output (DEALER) to
    # Supervised, a stop still waits for the next stage to read this stage's ends of stream (a source told to stop
    # ends its stream: that is how a run drains); a second stop signal gives up waiting. Alone, a stop is a stop.
    drain_on_stop = False

    def __init__(self, config: PipelineConfig, instance: int = 0, log_every_s: float = LOG_EVERY_S,
                 **options: Any) -> None:
        self.config = config
        self.instance = instance
        self.options = options
        self.stop = threading.Event()
        self.abandon = threading.Event()  # a second stop signal: stop waiting for anything
        self.failed = False  # set when the stage ends with an error: nothing more is waited for
        self.counters: dict[str, int] = defaultdict(int)
        self.ended: set[str] = set()  # cameras whose END this stage has passed on
        self.ends_sent: set[str] = set()  # cameras whose END this stage sent downstream ...
        self.ends_acked: set[str] = set()  # ... and those the next stage acknowledged
        self.latency_ms = LatencySamples(LATENCY_WINDOW)
        self.log_every_s = log_every_s
        self.load = LoadMeter()
        self._log_window = self._window(time.monotonic())
        self.ctx: zmq.Context | None = None
        self.in_sock: zmq.Socket | None = None
        self.out_sock: zmq.Socket | None = None
        self.control: zmq.Socket | None = None
        self.guard: CurveGuard | None = None
        self._last_report = 0.0

    # -- life cycle ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build models and open resources; runs in the child process."""

    def teardown(self) -> None:
        """Release resources; runs in the child process on exit."""

    def open_sockets(self) -> None:
        hwm = self.config.endpoints.high_water_mark
        self.ctx = zmq.Context()
        self.guard = CurveGuard(self.ctx, self.config.endpoints.curve)
        self.control = self.ctx.socket(zmq.PUSH)
        self.control.setsockopt(zmq.LINGER, 1000)
        self.control.setsockopt(zmq.SNDHWM, 1000)
        self.guard.connect(self.control, self.config.endpoint("control"))
        if self.input:
            endpoint = self.config.endpoint(self.input)
            bind_dir(endpoint)
            self.in_sock = self.ctx.socket(zmq.ROUTER)
            self.in_sock.setsockopt(zmq.RCVHWM, hwm)
            self.in_sock.setsockopt(zmq.LINGER, 0)
            self.guard.bind(self.in_sock, endpoint)
        if self.output:
            self.out_sock = self.ctx.socket(zmq.DEALER)
            self.out_sock.setsockopt(zmq.SNDHWM, hwm)
            self.out_sock.setsockopt(zmq.LINGER, STOP_LINGER_MS)
            self.guard.connect(self.out_sock, self.config.endpoint(self.output))

    def close_sockets(self) -> None:
        if self.out_sock is not None:
            if not self.failed:
                self._await_end_acks()
            self.out_sock.close(linger=STOP_LINGER_MS)
        if self.in_sock is not None:  # the acknowledgements of the last ends of stream still go out
            self.in_sock.close(linger=0 if self.failed or self.abandon.is_set() else STOP_LINGER_MS)
        if self.control is not None:
            self.control.close()
        if self.guard is not None:
            self.guard.stop()
        if self.ctx is not None:
            self.ctx.term()

    def _await_end_acks(self) -> None:
        """Keep the output connected until the next stage has read every end of stream sent to it (see the module
        docstring), or until told to stop."""
        assert self.out_sock is not None
        t0 = last_send = last_log = time.monotonic()
        while not self.ends_sent <= self.ends_acked and self.may_wait():
            if self.out_sock.poll(POLL_MS, zmq.POLLIN):
                frames = self.out_sock.recv_multipart()
                if len(frames) == 2 and frames[0] == END_ACK:
                    self.ends_acked.add(frames[1].decode(errors="replace"))
                continue
            now = time.monotonic()
            if now - last_send >= ACK_RESEND_S:
                last_send = now
                for cam in sorted(self.ends_sent - self.ends_acked):
                    with contextlib.suppress(zmq.Again):  # the queue is full: its END is still in it
                        self.out_sock.send_multipart(encode(EndMsg(cam)), zmq.NOBLOCK)
            if now - last_log >= DELIVERY_LOG_EVERY_S:
                last_log = now
                log.info("%s: finished; waiting %.0f s so far for the next stage to read the end of stream of %s",
                         self.label, now - t0, sorted(self.ends_sent - self.ends_acked))
        if not self.ends_sent <= self.ends_acked:
            log.warning("%s: stopped before the next stage read the end of stream of %s", self.label,
                        sorted(self.ends_sent - self.ends_acked))

    def may_wait(self) -> bool:
        """May the stage go on waiting for the next stage (to read its queue, or an end of stream)? Not once told
        to stop - except a supervised source, which is draining and whose wait the supervisor bounds (a second
        SIGTERM) - and never after a second stop signal."""
        drain = self.drain_on_stop and bool(self.options.get("supervised"))
        return not self.abandon.is_set() and (drain or not self.stop.is_set())

    def notify(self, kind: str, **fields: Any) -> None:
        """A report to the supervisor (never blocks the stage)."""
        if self.control is None:
            return
        body = {"kind": kind, "stage": self.label, "instance": self.instance, "pid": os.getpid(), **fields}
        try:
            self.control.send(msgpack.packb(body, use_bin_type=True), zmq.NOBLOCK)
        except zmq.Again:
            pass

    @property
    def label(self) -> str:
        return self.name

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        return {
            "counters": dict(self.counters),
            "ended": sorted(self.ended),
            "latency_p50_ms": lat[len(lat) // 2] if lat else None,
            "latency_p95_ms": lat[int(len(lat) * 0.95)] if lat else None,
        }

    def maybe_report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            self.notify("stats", **self.stats(), latency_new_ms=self.latency_ms.take_new())
        if now - self._log_window.t >= self.log_every_s:
            log.info("%s", self.status_line(now))
            self._log_window = self._window(now)

    # -- the periodic INFO line ---------------------------------------------------------------------------
    def processed(self) -> int:
        """Messages through the stage so far: a source's frames sent, another stage's messages received (one
        per camera frame all along the pipeline, so their rate is the stage's fps)."""
        return self.counters.get("received", 0) if self.input else self.counters.get("sent", 0)

    def _window(self, now: float) -> LogWindow:
        return LogWindow(now, self.processed(), LoadMeter(self.load.waited_s, self.load.turns, self.load.turns_behind))

    def restart_log_window(self) -> None:
        """Start the INFO-line window now (after setup), so model loading does not count as idle time."""
        self._log_window = self._window(time.monotonic())

    def status_line(self, now: float) -> str:
        """fps and load (busy share, turns that left input queued) over the window; latency p50/p95 over the
        last ``LATENCY_WINDOW`` samples; drops and malformed messages since the start."""
        w = self._log_window
        dt = max(now - w.t, 1e-6)
        fps = (self.processed() - w.processed) / dt
        if self.input:
            busy = 100 * max(0.0, 1 - (self.load.waited_s - w.load.waited_s) / dt)
            turns = self.load.turns - w.load.turns
            behind = self.load.turns_behind - w.load.turns_behind
            load = f"busy {busy:3.0f}%, input left queued in {behind}/{turns} turns"
        else:
            load = "no input"
        lat = sorted(self.latency_ms)
        latency = (f"latency p50 {lat[len(lat) // 2]:.1f} p95 {lat[int(len(lat) * 0.95)]:.1f} ms" if lat
                   else "latency -")
        dropped = sum(self.counters.get(k, 0) for k in DROP_COUNTERS)
        return (f"{self.label}: {fps:.1f} fps | {load} | {latency} | dropped {dropped}, "
                f"malformed {self.counters.get('malformed', 0)}")

    # -- main loop ----------------------------------------------------------------------------------------
    def send(self, msg: Msg, block: bool = True) -> bool:
        """Send downstream. Blocking waits while the next stage's queue is full (back-pressure, replay), as long
        as :meth:`may_wait` (a stage told to stop must not hang on a next stage that is gone); non-blocking drops
        the message instead (live). Returns False when the message was not sent."""
        assert self.out_sock is not None
        frames = encode(msg)
        while True:
            try:
                self.out_sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
                self.counters["sent"] += 1
                return True
            except zmq.Again:
                if not block:
                    return False
                if not self.may_wait():
                    self.counters["unsent_at_stop"] += 1  # told to stop with the next stage's queue full
                    return False
                self.out_sock.poll(POLL_MS, zmq.POLLOUT)

    def handle(self, msg: Msg) -> None:
        raise NotImplementedError

    def after_turn(self) -> None:
        """Called once per loop turn, after the input was drained (or the poll timed out): the work that spans
        messages - a batch across cameras, a batch deadline, a decision that wall time releases."""

    def finished(self) -> bool:
        """True when every camera's stream has ended and this stage has passed that on."""
        return bool(self.config.cameras) and self.ended >= {c.id for c in self.config.cameras}

    def run(self) -> None:
        assert self.in_sock is not None
        poller = zmq.Poller()
        poller.register(self.in_sock, zmq.POLLIN)
        while not self.stop.is_set() and not self.finished():
            t_poll = time.monotonic()
            events = dict(poller.poll(POLL_MS))
            self.load.waited_s += time.monotonic() - t_poll
            if self.in_sock in events:
                for _ in range(self.max_drain):  # drain what is queued, then after_turn() and reports
                    try:
                        sender, *frames = self.in_sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self.counters["received"] += 1
                    try:
                        msg = decode([f.buffer for f in frames])
                    except MessageError as e:
                        self.counters["malformed"] += 1
                        log.warning("%s: dropped a malformed message: %s", self.label, e)
                        continue
                    if isinstance(msg, EndMsg):  # everything its sender sent before it has been read
                        with contextlib.suppress(zmq.ZMQError):  # a sender gone meanwhile needs no answer
                            self.in_sock.send_multipart([sender.bytes, END_ACK, msg.camera_id.encode()], zmq.NOBLOCK)
                    self.handle(msg)
            self.after_turn()
            self.load.turns += 1
            self.load.turns_behind += bool(self.in_sock.get(zmq.EVENTS) & zmq.POLLIN)
            self.maybe_report()

    def forward_end(self, camera_id: str) -> None:
        if self.output:
            self.send(EndMsg(camera_id))
            self.ends_sent.add(camera_id)
        self.ended.add(camera_id)


LOG_LEVEL_ENV = "REID_LOG_LEVEL"  # run_pipeline's --log-level, inherited by the stage processes it spawns


def run_stage(stage: Stage, log_level: int | None = None) -> int:
    """Entry point of a stage process (or of ``run_pipeline.py --stage``)."""
    if log_level is None:
        log_level = logging.getLevelName(os.environ.get(LOG_LEVEL_ENV, "INFO"))
        log_level = log_level if isinstance(log_level, int) else logging.INFO
    setup_logging(log_level)
    def on_stop(*_: object) -> None:
        (stage.abandon if stage.stop.is_set() else stage.stop).set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN if stage.options.get("supervised") else on_stop)
    t0 = time.monotonic()
    try:
        stage.open_sockets()
        stage.setup()
        stage.notify("ready")
        stage.restart_log_window()
        stage.run()
        stage.maybe_report(force=True)
        stage.notify("done", **stage.stats())
        log.info("%s finished in %.1f s: %s", stage.label, time.monotonic() - t0, dict(stage.counters))
        return 0
    except Exception as e:
        stage.failed = True
        log.exception("%s failed", stage.label)
        stage.notify("error", error=f"{type(e).__name__}: {e}")
        return 1
    finally:
        try:
            stage.teardown()
        finally:
            stage.close_sockets()
