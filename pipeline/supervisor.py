"""The supervisor: starts the stage processes, watches them, restarts any that dies, and stops them cleanly.

Start order is downstream first (match, embed, detect, then the sources), each waited for until it reports
ready, so no frame is sent into a stage that is still loading its model. A stage that exits with an error is
reported and restarted (a source resumes after the last frame it sent; a restarted detect stage numbers its
tracks in a new range; the ends of streams already passed downstream are re-sent to it). Ctrl-C or SIGTERM
stops the sources; the stages drain what is in flight and finish; a second Ctrl-C terminates them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from pipeline.config import PipelineConfig
from pipeline.events import MOVED, NEW, decode_event
from pipeline.messages import EndMsg, encode
from pipeline.security import CurveGuard
from pipeline.sources import SourceError, probe_video
from pipeline.stage import Stage, bind_dir, run_stage

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
UPSTREAM = {"detect": "source", "embed": "detect", "match": "embed"}


class PipelineError(RuntimeError):
    """The pipeline cannot start or cannot go on; the message says which part and why."""


def _entry(stage_cls: type[Stage], config: PipelineConfig, instance: int, kwargs: dict[str, Any]) -> None:
    sys.exit(run_stage(stage_cls(config, instance, supervised=True, **kwargs)))


@dataclass
class StageProc:
    key: str  # "match", "embed", "detect", "source:<camera>"
    cls: type[Stage]
    kwargs: dict[str, Any]
    process: mp.Process | None = None
    instance: int = 0
    restarts: int = 0
    ready: bool = False
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.key.split(":")[0]


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory and prove it writable, so a full or read-only disk stops the run at once with
    a clear message instead of failing inside a stage."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
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


class Supervisor:
    def __init__(self, config: PipelineConfig, replay: bool = False, speed: float | None = 1.0,
                 duration_s: float | None = None, events_out: Path | None = None, max_restarts: int = 5,
                 status: bool = True) -> None:
        self.config = config
        self.replay = replay
        self.speed = speed
        self.duration_s = duration_s
        self.events_out = events_out
        self.max_restarts = max_restarts
        self.show_status = status
        self.mp = mp.get_context("spawn")
        self.stopping = 0
        self.procs: list[StageProc] = []
        self.events: list[dict] = []
        self.identities: dict[int, set[str]] = defaultdict(set)
        self.t0 = 0.0  # when the sources were started
        self.t_done = 0.0  # when the match stage reported its last decision

    # -- processes ------------------------------------------------------------------------------------------
    def spawn(self, sp: StageProc) -> None:
        sp.ready = sp.done = False
        sp.process = self.mp.Process(target=_entry, args=(sp.cls, self.config, sp.instance, sp.kwargs),
                                     name=f"{sp.key}#{sp.instance}", daemon=False)
        sp.process.start()

    def wait_ready(self, sp: StageProc) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not sp.ready:
            self.poll(100)
            if sp.ready:
                break
            if not sp.process.is_alive():
                err = sp.stats.get("error", f"exit code {sp.process.exitcode}")
                raise PipelineError(f"stage {sp.key} failed to start: {err}")
            if time.monotonic() > deadline:
                raise PipelineError(f"stage {sp.key} did not report ready within {READY_TIMEOUT_S:.0f} s")

    def restart(self, sp: StageProc) -> None:
        sp.restarts += 1
        sp.instance += 1
        if sp.restarts > self.max_restarts:
            raise PipelineError(f"stage {sp.key} died {sp.restarts} times; giving up")
        log.error("stage %s died (exit code %s); restarting it (restart %d of %d)", sp.key, sp.process.exitcode,
                  sp.restarts, self.max_restarts)
        if sp.kind == "source" and "last_frame" in sp.stats:
            sp.kwargs["start_frame"] = int(sp.stats["last_frame"]) + 1
        self.spawn(sp)
        self.wait_ready(sp)
        upstream = UPSTREAM.get(sp.kind)
        if upstream:  # ends of streams the upstream stage had already passed on were lost with the dead process
            ended = set().union(*[set(p.stats.get("ended", [])) for p in self.procs if p.kind == upstream])
            if ended:
                self.inject_ends(sp.kind, sorted(ended))

    def inject_ends(self, stage: str, cameras: list[str]) -> None:
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        self.guard.connect(sock, self.config.endpoint(stage))
        for cam in cameras:
            sock.send_multipart(encode(EndMsg(cam)))
        sock.close()
        log.info("re-sent end of stream of %s to the restarted %s stage", cameras, stage)

    # -- reports and events ---------------------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> None:
        events = dict(self.poller.poll(timeout_ms))
        if self.control in events:
            while True:
                try:
                    body = msgpack.unpackb(self.control.recv(zmq.NOBLOCK), raw=False)
                except zmq.Again:
                    break
                self.on_report(body)
        if self.sub in events:
            while True:
                try:
                    frames = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    self.on_event(decode_event(frames))
                except ValueError as e:
                    log.warning("ignored a malformed event: %s", e)

    def on_report(self, body: dict) -> None:
        sp = next((p for p in self.procs if p.key == body.get("stage")), None)
        if sp is None or body.get("instance") != sp.instance:
            return
        kind = body.get("kind")
        if kind == "ready":
            sp.ready = True
        elif kind in ("stats", "done"):
            sp.stats.update(body)
            sp.done = sp.done or kind == "done"
            if kind == "done" and sp.kind == "match":
                self.t_done = time.monotonic()
        elif kind == "error":
            sp.stats["error"] = body.get("error")
            log.error("stage %s reported: %s", sp.key, body.get("error"))

    def on_event(self, event: dict) -> None:
        self.events.append(event)
        if event.get("global_id") is not None:
            self.identities[event["global_id"]].add(event["camera_id"])
        if self.events_file:
            self.events_file.write(json.dumps(event) + "\n")
            self.events_file.flush()
        if event["kind"] in (NEW, MOVED):
            log.debug("event %s", event)

    # -- status ---------------------------------------------------------------------------------------------
    def status_line(self) -> str:
        parts = []
        for p in self.procs:
            c = p.stats.get("counters", {})
            if p.kind == "source":
                parts.append(f"{p.key.split(':')[1]} {c.get('frames', 0)}f")
        det = next(p for p in self.procs if p.kind == "detect").stats.get("counters", {})
        emb = next(p for p in self.procs if p.kind == "embed").stats.get("counters", {})
        match = next(p for p in self.procs if p.kind == "match").stats
        sent = sum(p.stats.get("counters", {}).get("sent", 0) for p in self.procs if p.kind == "source")
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        q_detect = max(0, sent - det.get("received", 0))
        q_embed = max(0, det.get("sent", 0) - emb.get("received", 0))
        q_match = max(0, emb.get("sent", 0) - match.get("counters", {}).get("received", 0))
        lat = match.get("latency_p95_ms")
        multi = sum(len(c) > 1 for c in self.identities.values())
        dropped = det.get("dropped_frames", 0) + sum(p.stats.get("counters", {}).get("dropped_frames", 0)
                                                     for p in self.procs if p.kind == "source")
        return (f"[{elapsed:6.1f}s] frames {' '.join(parts)} (dropped {dropped})"
                f" | detect {det.get('frames', 0) / elapsed:4.1f} fps"
                f" | queues det {q_detect} emb {q_embed} match {q_match} | crops {emb.get('embedded', 0)}"
                f" | p95 frame->match {lat / 1e3 if lat else 0:.2f}s | ids {len(self.identities)} ({multi} multi-cam)"
                f" | events {len(self.events)}")

    # -- main -----------------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.stopping += 1
        if self.stopping == 1:
            log.warning("stopping: sources end their streams, the stages drain (Ctrl-C again to abort)")
            for p in self.procs:
                if p.kind == "source" and p.process is not None and p.process.is_alive():
                    p.process.terminate()  # SIGTERM: the source sets its stop flag and sends its end of stream
        else:
            log.warning("aborting")
            for p in self.procs:
                if p.process is not None and p.process.is_alive():
                    p.process.kill()

    def build(self, redis_url: str) -> None:
        from pipeline.detect_stage import DetectStage
        from pipeline.embed_stage import EmbedStage
        from pipeline.match_stage import MatchStage
        from pipeline.source_stage import SourceStage

        self.procs = [StageProc("match", MatchStage, {"redis_url": redis_url}),
                      StageProc("embed", EmbedStage, {}),
                      StageProc("detect", DetectStage, {})]
        for cam in self.config.cameras:
            self.procs.append(StageProc(f"source:{cam.id}", SourceStage, {
                "camera_id": cam.id, "replay": self.replay, "speed": self.speed, "duration_s": self.duration_s}))

    def run(self) -> int:
        from reid.embedded_redis import redis_url_for

        check_sources(self.config)
        # Stage processes share few cores: one BLAS/OpenMP thread each (with two, a 1e3-identity match took
        # 12 ms instead of 0.2 ms here). Children inherit this environment when they are spawned.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        prepare_run_dir(self.config.resolved_run_dir)
        self.ctx = zmq.Context()
        self.guard = CurveGuard(self.ctx, self.config.endpoints.curve)
        self.control = self.ctx.socket(zmq.PULL)
        self.control.setsockopt(zmq.LINGER, 0)
        bind_dir(self.config.endpoint("control"))
        self.guard.bind(self.control, self.config.endpoint("control"))
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.guard.connect(self.sub, self.config.endpoint("events"), always=True)
        self.poller = zmq.Poller()
        self.poller.register(self.control, zmq.POLLIN)
        self.poller.register(self.sub, zmq.POLLIN)
        self.events_file = open(self.events_out, "w") if self.events_out else None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with redis_url_for(self.config.matcher.redis) as url:
                self.build(url)
                for sp in self.procs:
                    if sp.kind == "source":
                        time.sleep(0.3)  # let the event subscription reach the publisher before frames flow
                        break
                    self.spawn(sp)
                    self.wait_ready(sp)
                self.t0 = time.monotonic()
                for sp in self.procs:
                    if sp.kind == "source":
                        self.spawn(sp)
                log.info("stages ready; %d cameras streaming (%s); events on %s", len(self.config.cameras),
                         "replay" if self.replay else "live", self.config.endpoint("events"))
                return self.watch()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for p in self.procs:
                if p.process is not None and p.process.is_alive():
                    p.process.terminate()
                    p.process.join(5)
            if self.events_file:
                self.events_file.close()
            self.control.close()
            self.sub.close()
            self.guard.stop()
            self.ctx.term()

    def watch(self) -> int:
        match = next(p for p in self.procs if p.kind == "match")
        last_status = 0.0
        live_status = self.show_status and sys.stderr.isatty()
        while True:
            self.poll(100)
            for sp in self.procs:
                proc = sp.process
                if proc is None or proc.is_alive():
                    continue
                proc.join()
                if proc.exitcode == 0:
                    sp.done = True
                elif not sp.done and self.stopping < 2:
                    self.restart(sp)
            if match.done and not match.process.is_alive():
                break
            if all(p.done or (p.process is not None and not p.process.is_alive()) for p in self.procs) \
                    and self.stopping >= 2:
                break
            now = time.monotonic()
            if self.show_status and now - last_status >= (1.0 if live_status else 5.0):
                last_status = now
                line = self.status_line()
                if live_status:
                    sys.stderr.write("\r" + line[: 200] + "\033[K")
                    sys.stderr.flush()
                else:
                    log.info("%s", line)
        time.sleep(0.3)  # the last events still in flight on the PUB socket
        self.poll(200)
        for p in self.procs:
            if p.process is not None:
                p.process.join(10)
        if live_status:
            sys.stderr.write("\n")
        self.summary()
        return 0 if self.stopping < 2 else 130

    def summary(self) -> None:
        elapsed = time.monotonic() - self.t0
        log.info("finished in %.1f s: %s", elapsed, self.status_line())
        for p in self.procs:
            log.info("  %-12s restarts %d  %s", p.key, p.restarts, p.stats.get("counters", {}))
        multi = {g: sorted(c) for g, c in self.identities.items() if len(c) > 1}
        log.info("%d identities, %d seen in more than one camera: %s", len(self.identities), len(multi),
                 dict(list(multi.items())[:20]))
