"""The stage processes' life cycle: start them downstream first, wait for each to be ready, watch them, restart
one that dies, drain and stop them.

Only the supervisor's main loop calls in here (never a signal handler): starting, restarting and terminating
processes are the loop's work, done between two polls of the control socket.

Resume rules of a restart: a source resumes after the last frame it reported sent; a restarted detect stage
numbers its tracks in a new range (its instance number); the ends of streams the upstream stage had already
passed on were lost with the dead process and are sent to the new one again.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.stage import Stage, run_stage

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
UPSTREAM = {"detect": "source", "embed": "detect", "match": "embed"}

Pump = Callable[[int], None]  # polls the control and event sockets for up to N ms and dispatches what came
SendEnds = Callable[[str, list[str]], None]  # sends the end of stream of these cameras to a stage's input


class PipelineError(RuntimeError):
    """The pipeline cannot start or cannot go on; the message says which part and why."""


class Aborted(PipelineError):
    """A second Ctrl-C or SIGTERM came while a stage was starting."""


def _entry(stage_cls: type[Stage], config: PipelineConfig, instance: int, kwargs: dict[str, Any]) -> None:
    sys.exit(run_stage(stage_cls(config, instance, supervised=True, **kwargs)))


@dataclass
class StageProc:
    """One stage's process slot: what to start, its current process and the latest report of that process."""

    key: str  # "match", "embed", "detect", "source:<camera>"
    cls: type[Stage]
    kwargs: dict[str, Any]
    process: mp.Process | None = None
    instance: int = 0
    restarts: int = 0
    ready: bool = False
    done: bool = False
    done_at: float | None = None  # monotonic time of its "done" report (match: when the last decision was made)
    exited_at: float | None = None  # monotonic time its process was seen to have exited
    stats: dict[str, Any] = field(default_factory=dict)
    received: int = -1  # its "received" counter at the latest change ...
    received_at: float = 0.0  # ... and when that change was seen

    @property
    def kind(self) -> str:
        return self.key.split(":")[0]

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


def stage_procs(config: PipelineConfig, replay: bool, speed: float | None, duration_s: float | None,
                log_every_s: float, track_log: bool = False) -> list[StageProc]:
    """The slots of a pipeline in start order: downstream first, then one source per camera. The match stage's
    Redis URL is filled in when the run has one; ``track_log``: the detect stage logs the recorded cameras'
    per-frame tracks (for ``--save-video`` and ``--tracks-out``)."""
    from pipeline.detect_stage import DetectStage
    from pipeline.embed_stage import EmbedStage
    from pipeline.match_stage import MatchStage
    from pipeline.source_stage import SourceStage

    common = {"log_every_s": log_every_s}
    procs = [StageProc("match", MatchStage, {**common, "redis_url": None}),
             StageProc("embed", EmbedStage, dict(common)),
             StageProc("detect", DetectStage, {**common, "track_log": track_log})]
    for cam in config.cameras:
        procs.append(StageProc(f"source:{cam.id}", SourceStage, {
            **common, "camera_id": cam.id, "replay": replay, "speed": speed, "duration_s": duration_s}))
    return procs


class StageLifecycle:
    """Starts, watches, restarts and stops the stage processes. Reports reach it through :meth:`on_report`,
    called by ``pump`` (which it calls itself while it waits for a stage to be ready)."""

    def __init__(self, config: PipelineConfig, procs: list[StageProc], pump: Pump, send_ends: SendEnds,
                 max_restarts: int = 5) -> None:
        self.config = config
        self.procs = procs
        self.pump = pump
        self.send_ends = send_ends
        self.max_restarts = max_restarts
        self.mp = mp.get_context("spawn")
        self.t0 = 0.0  # when the sources were started (0: not yet)
        self.draining = False  # sources told to end their streams; the other stages finish what is in flight
        self.aborted = False  # every process killed
        self.restarts_allowed = True  # False once the run is aborted or stopped before the cameras started

    def get(self, kind: str) -> StageProc:
        return next(p for p in self.procs if p.kind == kind)

    def of_kind(self, kind: str) -> list[StageProc]:
        return [p for p in self.procs if p.kind == kind]

    # -- start ----------------------------------------------------------------------------------------------
    def spawn(self, sp: StageProc) -> None:
        sp.ready = sp.done = False
        sp.exited_at = None
        sp.process = self.mp.Process(target=_entry, args=(sp.cls, self.config, sp.instance, sp.kwargs),
                                     name=f"{sp.key}#{sp.instance}", daemon=False)
        sp.process.start()

    def wait_ready(self, sp: StageProc, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Poll until ``sp`` reports ready (True) or ``give_up()`` says to stop waiting (False); raises when the
        stage dies or stays silent, or when the run is aborted meanwhile."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not sp.ready:
            self.pump(100)
            if sp.ready:
                break
            if self.aborted:
                raise Aborted(f"aborted while stage {sp.key} was starting")
            if give_up():
                return False
            if not sp.process.is_alive():
                err = sp.stats.get("error", f"exit code {sp.process.exitcode}")
                raise PipelineError(f"stage {sp.key} failed to start: {err}")
            if time.monotonic() > deadline:
                raise PipelineError(f"stage {sp.key} did not report ready within {READY_TIMEOUT_S:.0f} s")
        return True

    def start_stages(self, stop_requested: Callable[[], bool]) -> bool:
        """Start every stage but the sources, downstream first, each once the one after it is ready. False when
        a stop was requested meanwhile (then see :meth:`stop_unstarted`)."""
        for sp in self.procs:
            if sp.kind == "source":
                break
            if stop_requested():
                return False
            self.spawn(sp)
            if not self.wait_ready(sp, give_up=stop_requested):
                return False
        return True

    def start_sources(self) -> None:
        self.t0 = time.monotonic()
        for sp in self.of_kind("source"):
            self.spawn(sp)

    def stop_unstarted(self) -> None:
        """A stop came before the cameras started: nothing flowed, so nothing is drained. The stages already
        started are told to stop (SIGTERM: each finishes and exits cleanly), the others never start, and
        nothing is restarted (a process killed by SIGTERM before it set its handler is not a failure here)."""
        self.draining = True
        self.restarts_allowed = False
        for sp in self.procs:
            if sp.process is None:
                sp.done = True
            elif sp.alive:
                sp.process.terminate()

    # -- reports --------------------------------------------------------------------------------------------
    def on_report(self, body: dict) -> None:
        sp = next((p for p in self.procs if p.key == body.get("stage")), None)
        if sp is None or body.get("instance") != sp.instance:
            return  # a report of an earlier instance, still in flight when it was replaced
        kind = body.get("kind")
        if kind == "ready":
            sp.ready = True
        elif kind in ("stats", "done"):
            sp.stats.update(body)
            if kind == "done":
                sp.done = True
                sp.done_at = time.monotonic()
        elif kind == "error":
            sp.stats["error"] = body.get("error")
            log.error("stage %s reported: %s", sp.key, body.get("error"))

    # -- watch ----------------------------------------------------------------------------------------------
    def reap(self) -> None:
        """Collect the processes that exited: a clean exit is done; a failure is restarted unless the stage had
        already reported done or the run is aborted. While draining, a source that dies is not restarted (it
        was told to stop); its end of stream is sent on for it."""
        for sp in self.procs:
            proc = sp.process
            if proc is None or proc.is_alive():
                continue
            proc.join()
            if sp.exited_at is None:
                sp.exited_at = time.monotonic()
            if proc.exitcode == 0:
                sp.done = True
            elif sp.done or not self.restarts_allowed:
                continue
            elif sp.kind == "source" and self.draining:
                sp.done = True
                self.send_ends("detect", [sp.key.split(":")[1]])
            else:
                self.restart(sp)

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
            ended = set().union(*[set(p.stats.get("ended", [])) for p in self.of_kind(upstream)])
            if ended:
                self.send_ends(sp.kind, sorted(ended))
                log.info("re-sent end of stream of %s to the restarted %s stage", sorted(ended), sp.kind)

    def stalled(self, timeout_s: float) -> str | None:
        """Why the run cannot end, if it cannot: a stage whose upstream stages have all exited (so everything they
        sent was delivered), that still waits for an end of stream and has received nothing for ``timeout_s``."""
        now = time.monotonic()
        for kind, up in UPSTREAM.items():
            sp = self.get(kind)
            received = int(sp.stats.get("counters", {}).get("received", 0))
            if received != sp.received:
                sp.received, sp.received_at = received, now
            ups = self.of_kind(up)
            if sp.done or not sp.alive or not ups or any(p.alive or p.exited_at is None for p in ups):
                continue
            quiet_since = max([sp.received_at, *(p.exited_at for p in ups)])  # type: ignore[list-item]
            if now - quiet_since > timeout_s:
                waiting = sorted({c.id for c in self.config.cameras} - set(sp.stats.get("ended", [])))
                return (f"stage {kind} still waits for the end of stream of {waiting}, but its upstream stage "
                        f"{up} has finished and {kind} has received nothing for {now - quiet_since:.0f} s "
                        f"({received} messages in all): the end of stream was lost")
        return None

    def finished(self) -> bool:
        """The match stage made its last decision and exited, or, after an abort, every process is gone."""
        match = self.get("match")
        if match.done and not match.alive:
            return True
        return self.aborted and not any(p.alive for p in self.procs)

    # -- stop -----------------------------------------------------------------------------------------------
    def drain(self) -> None:
        """SIGTERM to the running sources: each sets its stop flag and sends its end of stream, and the other
        stages finish what is in flight."""
        self.draining = True
        for sp in self.of_kind("source"):
            if sp.alive:
                sp.process.terminate()

    def stop_all(self) -> None:
        """SIGTERM to every stage: each stops at once (its output queue gets a short linger) and is not restarted."""
        self.restarts_allowed = False
        for sp in self.procs:
            if sp.alive:
                sp.process.terminate()

    def kill(self) -> None:
        """SIGKILL to every stage: nothing is drained and nothing restarted."""
        self.aborted = True
        self.restarts_allowed = False
        for sp in self.procs:
            if sp.alive:
                sp.process.kill()

    def join(self, timeout_s: float) -> None:
        for sp in self.procs:
            if sp.process is not None:
                sp.process.join(timeout_s)

    def terminate(self) -> None:
        """On the way out, whatever the reason: SIGTERM to each process still running, then a short wait."""
        for sp in self.procs:
            if sp.alive:
                sp.process.terminate()
                sp.process.join(5)
