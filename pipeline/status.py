"""The supervisor's status line and run summary: what the stages reported, in one line.

On a terminal the line is redrawn in place every second; otherwise (a log file, a service) it is logged at
INFO every 5 s. Queue sizes are inferred from the counters the stages report (sent by one, not yet received
by the next).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pipeline.lifecycle import StageLifecycle
from pipeline.recorder import EventRecorder

log = logging.getLogger(__name__)


class StatusLine:
    """Formats and shows the status line of a run; ``tick()`` is called from the main loop."""

    def __init__(self, stages: StageLifecycle, recorder: EventRecorder, enabled: bool = True,
                 stream: TextIO = sys.stderr) -> None:
        self.stages = stages
        self.recorder = recorder
        self.enabled = enabled
        self.stream = stream
        self.in_place = enabled and stream.isatty()
        self.every_s = 1.0 if self.in_place else 5.0
        self._last = 0.0

    def text(self) -> str:
        procs = self.stages.procs
        sources = self.stages.of_kind("source")
        frames = " ".join(f"{p.key.split(':')[1]} {p.stats.get('counters', {}).get('frames', 0)}f" for p in sources)
        det = self.stages.get("detect").stats.get("counters", {})
        emb = self.stages.get("embed").stats.get("counters", {})
        match = self.stages.get("match").stats
        sent = sum(p.stats.get("counters", {}).get("sent", 0) for p in sources)
        elapsed = max(time.monotonic() - self.stages.t0, 1e-6) if self.stages.t0 else 1e-6
        q_detect = max(0, sent - det.get("received", 0))
        q_embed = max(0, det.get("sent", 0) - emb.get("received", 0))
        q_match = max(0, emb.get("sent", 0) - match.get("counters", {}).get("received", 0))
        lat = match.get("latency_p95_ms")
        dropped = sum(p.stats.get("counters", {}).get("dropped_frames", 0) for p in procs
                      if p.kind in ("source", "detect"))
        return (f"[{elapsed:6.1f}s] frames {frames} (dropped {dropped})"
                f" | detect {det.get('frames', 0) / elapsed:4.1f} fps"
                f" | queues det {q_detect} emb {q_embed} match {q_match} | crops {emb.get('embedded', 0)}"
                f" | p95 frame->match {lat / 1e3 if lat else 0:.2f}s"
                f" | ids {len(self.recorder.identities)} ({self.recorder.multi_camera} multi-cam)"
                f" | events {self.recorder.count}")

    def tick(self) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.every_s:
            return
        self._last = now
        if self.in_place:
            self.stream.write("\r" + self.text()[:200] + "\033[K")
            self.stream.flush()
        else:
            log.info("%s", self.text())

    def close(self) -> None:
        """End the line redrawn in place, so the next log line starts on its own."""
        if self.in_place:
            self.stream.write("\n")

    def log_summary(self) -> None:
        elapsed = time.monotonic() - self.stages.t0 if self.stages.t0 else 0.0
        log.info("finished in %.1f s: %s", elapsed, self.text())
        for p in self.stages.procs:
            log.info("  %-12s restarts %d  %s", p.key, p.restarts, p.stats.get("counters", {}))
        multi = {g: sorted(c) for g, c in self.recorder.identities.items() if len(c) > 1}
        log.info("%d identities, %d seen in more than one camera: %s", len(self.recorder.identities), len(multi),
                 dict(list(multi.items())[:20]))
