"""The supervisor: starts the stage processes, watches them, restarts any that dies, and stops them cleanly.

Start order is downstream first (match, embed, detect, then the sources), each waited for until it reports
ready, so no frame is sent into a stage that is still loading its model. A stage that exits with an error is
reported and restarted (a source resumes after the last frame it sent; a restarted detect stage numbers its
tracks in a new range; the ends of streams already passed downstream are re-sent to it). Ctrl-C or SIGTERM
stops the sources; the stages drain what is in flight for up to 7 s, are then told to stop, and are killed if
still running 2.5 s later (a second Ctrl-C kills them at once). A stage whose upstream has finished and that
waits for an end of stream that does not come (``endpoints.stall_timeout_s``) ends the run with an error naming it.

The parts, one job each: :class:`~pipeline.lifecycle.StageLifecycle` (the processes),
:class:`~pipeline.recorder.EventRecorder` (the identity events), :class:`~pipeline.status.StatusLine` (what
the operator sees), :class:`SupervisorSockets` (the control and event sockets) and :class:`StopSignals`
(Ctrl-C and SIGTERM as two events). :class:`Supervisor` wires them and runs the main loop, the only place
that acts on a signal.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import msgpack
import zmq

from pipeline.config import PipelineConfig
from pipeline.events import decode_event
from pipeline.lifecycle import Aborted, PipelineError, StageLifecycle, StageProc, stage_procs
from pipeline.messages import EndMsg, encode
from pipeline.recorder import EventRecorder
from pipeline.security import CurveGuard
from pipeline.sources import SourceError, is_video_file, probe_video
from pipeline.stage import LOG_EVERY_S, POLL_MS, bind_dir
from pipeline.status import StatusLine

__all__ = ["PipelineError", "Supervisor", "check_sources", "prepare_run_dir"]

log = logging.getLogger(__name__)

STOP_DRAIN_S = 7.0  # after a Ctrl-C or SIGTERM, the stages drain this long before they are told to stop ...
STOP_KILL_S = 2.5  # ... and are killed this long after that: any run ends within 10 s of a stop
EVENTS_SPILL = "render_events.jsonl"  # in the run directory: the events --save-video reads back


def set_aside_replay_store(config: PipelineConfig) -> None:
    """A replay starts from an empty embedded identity store; an earlier run's store is kept beside it as
    ``redis.previous`` (one, the latest).

    Why: a replay's video times start again at 0, so an earlier run's identities hold tracks seen "at the same
    time" in the same cameras as this run's, which the matcher reads as two people; and a replay is an analysis of
    its recording, expected to give the same identities every time. A live run keeps its store: identities
    surviving a restart is the point of keeping them on disk. An external Redis (``matcher.redis.url``) is never
    touched: give a replay its own ``namespace`` there.
    """
    redis = config.matcher.redis
    data = Path(redis.embedded_dir)
    if redis.url is not None or not data.is_dir() or not any(data.iterdir()):
        return
    kept = data.with_name(data.name + ".previous")
    try:
        if kept.exists():
            shutil.rmtree(kept)
        data.rename(kept)
    except OSError as e:
        raise PipelineError(f"replay: cannot set the earlier identity store {data} aside: {e.strerror or e}") from None
    log.info("replay: starting from an empty identity store; the earlier run's is kept in %s", kept)


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory and prove it writable, so a full or read-only disk stops the run at once with
    a clear message instead of failing inside a stage. The track logs of an earlier run are removed: a restarted
    detect stage appends to this run's logs, and --save-video / --tracks-out read this run's only (identities
    in the embedded Redis persist in a live run: that is the point of keeping them on disk; a replay starts from an
    empty store, :func:`set_aside_replay_store`)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for old in (run_dir / "tracks").glob("*.jsonl"):
            old.unlink()
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as e:
        raise PipelineError(f"run directory {run_dir} is not usable: {e.strerror or e}") from None


def check_sources(config: PipelineConfig) -> None:
    """Fail early, naming the camera and file, when a recorded source cannot be read."""
    for cam in config.cameras:
        if cam.is_live:
            continue
        path = Path(str(cam.source))
        try:
            if path.is_dir():
                continue
            probe_video(path)
        except SourceError as e:
            raise PipelineError(f"camera {cam.id}: {e}") from None


def limit_threads() -> None:
    """Stage processes share few cores: one BLAS/OpenMP thread each (with two, a 1e3-identity match took 12 ms
    instead of 0.2 ms here). Children inherit this environment when they are spawned."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


class StopSignals:
    """Ctrl-C and SIGTERM as two events, set by the handler and acted on by the main loop: a signal handler
    interrupts the loop at any point, so it must not start or stop processes itself."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # first signal: end the streams, drain the stages
        self.abort = threading.Event()  # second signal: kill the stages

    def on_signal(self, signum: int, frame: object) -> None:
        (self.abort if self.stop.is_set() else self.stop).set()


class SupervisorSockets:
    """The supervisor's ZeroMQ side: the PULL socket the stages report to, a SUB socket on the identity events,
    and DEALER sockets made on demand to send ends of streams into a stage's input."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.ctx = zmq.Context()
        self.guard = CurveGuard(self.ctx, config.endpoints.curve)
        self.control = self.ctx.socket(zmq.PULL)
        self.control.setsockopt(zmq.LINGER, 0)
        bind_dir(config.endpoint("control"))
        self.guard.bind(self.control, config.endpoint("control"))
        self.events = self.ctx.socket(zmq.SUB)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.setsockopt(zmq.SUBSCRIBE, b"")
        self.guard.connect(self.events, config.endpoint("events"), always=True)
        self.poller = zmq.Poller()
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.events, zmq.POLLIN)

    def receive(self, timeout_ms: int) -> tuple[list[dict], list[dict]]:
        """(reports, events) that arrived within ``timeout_ms``; a malformed event is logged and skipped."""
        ready = dict(self.poller.poll(timeout_ms))
        reports: list[dict] = []
        events: list[dict] = []
        while self.control in ready:
            try:
                reports.append(msgpack.unpackb(self.control.recv(zmq.NOBLOCK), raw=False))
            except zmq.Again:
                break
        while self.events in ready:
            try:
                frames = self.events.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                events.append(decode_event(frames))
            except ValueError as e:
                log.warning("ignored a malformed event: %s", e)
        return reports, events

    def send_ends(self, stage: str, cameras: list[str]) -> None:
        sock = self.ctx.socket(zmq.DEALER)  # a stage's input is a ROUTER (pipeline.stage)
        sock.setsockopt(zmq.LINGER, 2000)
        self.guard.connect(sock, self.config.endpoint(stage))
        for cam in cameras:
            sock.send_multipart(encode(EndMsg(cam)))
        sock.close()

    def close(self) -> None:
        self.control.close()
        self.events.close()
        self.guard.stop()
        self.ctx.term()


class Supervisor:
    """Runs one pipeline: wires the parts (see the module docstring) and runs the main loop."""

    def __init__(self, config: PipelineConfig, replay: bool = False, speed: float | None = 1.0,
                 duration_s: float | None = None, events_out: Path | None = None, max_restarts: int = 5,
                 status: bool = True, stage_log_every_s: float = LOG_EVERY_S, track_log: bool = False,
                 config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # the file config came from: the calibration page writes next to it
        self.replay = replay
        self.signals = StopSignals()
        self.stages = StageLifecycle(config, stage_procs(config, replay, speed, duration_s, stage_log_every_s,
                                                                track_log),
                                     pump=self.pump, send_ends=self.send_ends, max_restarts=max_restarts)
        self.recorder = EventRecorder(config.resolved_run_dir / EVENTS_SPILL,
                                      spill_cameras={c.id for c in config.cameras if is_video_file(c)},
                                      copy_to=events_out)
        self.status = StatusLine(self.stages, self.recorder, enabled=status)
        self.sockets: SupervisorSockets | None = None  # open while run() runs
        self.stop_deadline: float | None = None  # after a Ctrl-C: when the stages that have not drained are stopped
        self.stop_terminated = False
        self.metrics = None  # PipelineMetrics while the HTTP service runs
        self.service = None  # its ServiceThread (the url: self.service.url)

    # -- what a caller reads (tests, benchmarks, run_pipeline.py) ----------------------------------------------
    @property
    def procs(self) -> list[StageProc]:
        return self.stages.procs

    @property
    def events(self) -> list[dict]:
        """The latest events (all of a short run; at most ``recorder.recent.maxlen``)."""
        return list(self.recorder.recent)

    @property
    def identities(self) -> dict[int, set[str]]:
        return self.recorder.identities

    @property
    def t0(self) -> float:
        """When the sources were started (0.0 until then)."""
        return self.stages.t0

    # -- the main loop's steps -------------------------------------------------------------------------------
    def pump(self, timeout_ms: int) -> None:
        """One turn of the loop's input side: hand the reports to the life cycle and the events to the
        recorder, then act on a pending Ctrl-C or SIGTERM."""
        assert self.sockets is not None
        reports, events = self.sockets.receive(timeout_ms)
        for body in reports:
            self.stages.on_report(body)
            if self.metrics is not None:
                self.metrics.on_report(body)
        for event in events:
            self.recorder.record(event)
        self.act_on_signals()

    def act_on_signals(self) -> None:
        if self.signals.abort.is_set() and not self.stages.aborted:
            log.warning("aborting")
            self.stages.kill()
        elif self.signals.stop.is_set() and not self.stages.draining and self.stages.t0:
            log.warning("stopping: sources end their streams, the stages drain for up to %.0f s (Ctrl-C again to "
                        "abort)", STOP_DRAIN_S)
            self.stages.drain()
            self.stop_deadline = time.monotonic() + STOP_DRAIN_S

    def enforce_stop_deadline(self) -> None:
        """A stop ends the run within STOP_DRAIN_S + STOP_KILL_S: what has not drained by then is told to stop
        (SIGTERM: each stage gives its output queue STOP_LINGER_MS), and what is still running after that, killed."""
        if self.stop_deadline is None or self.stages.aborted:
            return
        now = time.monotonic()
        if now > self.stop_deadline + STOP_KILL_S:
            log.warning("stages still running %.0f s after the stop: killing them", STOP_DRAIN_S + STOP_KILL_S)
            self.stages.kill()
        elif now > self.stop_deadline and not self.stop_terminated:
            log.warning("the stages did not drain within %.0f s: stopping them", STOP_DRAIN_S)
            self.stop_terminated = True
            self.stages.stop_all()

    def send_ends(self, stage: str, cameras: list[str]) -> None:
        assert self.sockets is not None
        self.sockets.send_ends(stage, cameras)

    # -- main -----------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run to the end of the streams (replay), or until Ctrl-C / SIGTERM: 0 when the stages drained and
        finished, 130 when aborted; raises :class:`PipelineError` when the pipeline cannot start or go on."""
        from reid.identity.redis_server import redis_url_for

        check_sources(self.config)
        limit_threads()
        prepare_run_dir(self.config.resolved_run_dir)
        if self.replay:
            set_aside_replay_store(self.config)
        self.recorder.open()
        self.sockets = SupervisorSockets(self.config)
        old = {s: signal.signal(s, self.signals.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with redis_url_for(self.config.matcher.redis) as url:
                self.stages.get("match").kwargs["redis_url"] = url
                store = self.start_service(url)
                try:
                    if self.stages.start_stages(self.signals.stop.is_set):
                        time.sleep(0.3)  # let the event subscription reach the publisher before frames flow
                        self.stages.start_sources()
                        log.info("stages ready; %d cameras streaming (%s); events on %s", len(self.config.cameras),
                                 "replay" if self.replay else "live", self.config.endpoint("events"))
                    else:
                        log.warning("stopped while the stages were starting: the cameras are not started")
                        self.stages.stop_unstarted()
                    return self.watch()
                finally:
                    if self.service is not None:
                        self.service.stop()
                        store.close()
        except Aborted as e:
            log.warning("%s", e)
            return 130
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.stages.terminate()
            self.recorder.close()
            self.sockets.close()
            self.sockets = None

    def start_service(self, redis_url: str):  # noqa: ANN201 - an IdentityStore, or None without the service
        """The HTTP service (``http:`` section or ``--http``), in a thread of this process; None when off."""
        if self.config.http is None:
            return None
        from pipeline.service.metrics import PipelineMetrics
        from pipeline.service.server import start_service

        self.metrics = PipelineMetrics(lambda: self.stages.procs,
                                       lambda: int(self.stages.get("match").stats.get("identities", 0)))
        try:
            self.service, store = start_service(self.config, self.config.http, redis_url, self.metrics, self.health,
                                                self.config_path)
        except RuntimeError as e:
            raise PipelineError(str(e)) from None
        return store

    def health(self) -> dict:
        """What /healthz adds: each stage process's state."""
        return {"streaming": bool(self.stages.t0), "finished": self.stages.finished(),
                "stages": {p.key: {"alive": p.alive, "ready": p.ready, "restarts": p.restarts}
                           for p in self.stages.procs}}

    def watch(self) -> int:
        while not self.stages.finished():
            self.pump(POLL_MS)
            self.stages.reap()
            self.status.tick()
            self.enforce_stop_deadline()
            stalled = self.stages.stalled(self.config.endpoints.stall_timeout_s)
            if stalled:
                raise PipelineError(stalled)
        time.sleep(0.3)  # the last events still in flight on the PUB socket
        self.pump(200)
        self.stages.join(10)
        self.status.close()
        self.status.log_summary()
        return 130 if self.stages.aborted else 0
