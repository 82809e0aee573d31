"""Prometheus metrics of a running pipeline, fed by the stage reports the supervisor already receives.

Why from the reports: every stage sends the supervisor its counters once a second (``pipeline.stage``), so the
metrics cost the stages nothing. Counters are the stages' own totals, summed over the processes of a kind; a
restarted stage starts its totals again from zero, which Prometheus reads as a counter reset (``rate()`` and
``increase()`` handle it). Latency histograms observe each sample once: a report carries the samples taken since
the previous one (``latency_new_ms``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.lifecycle import StageProc
from pipeline.stage import DROP_COUNTERS

# (metric name, help, stage kind, counter in that stage's report)
COUNTERS = (
    ("reid_frames_read", "frames read by the sources", "source", "frames"),
    ("reid_detections", "person detections", "detect", "detections"),
    ("reid_crops", "crops sent for embedding", "detect", "crops"),
    ("reid_embeddings", "crops embedded", "embed", "embedded"),
    ("reid_matches", "tracks placed in an identity (first match of each track)", "match", "matched_tracks"),
    ("reid_events", "identity events published", "match", "events"),
)
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
LATENCY_HELP = {"detect": "detection and tracking per frame", "embed": "one embedding batch",
                "match": "frame capture to match decision", "source": "", "": ""}


class PipelineMetrics(Collector):
    """A private registry with the pipeline's metrics; :meth:`on_report` is called by the supervisor's loop, a
    scrape (another thread) reads under the same lock."""

    def __init__(self, procs: Callable[[], list[StageProc]], identities: Callable[[], int]) -> None:
        self.procs = procs
        self.identities = identities
        self.lock = threading.Lock()
        self.counters: dict[str, dict[str, int]] = {}  # stage key -> its latest counters
        self.registry = CollectorRegistry()
        self.latency = Histogram("reid_stage_latency_ms", "per-stage latency in milliseconds (detect: per frame; "
                                 "embed: per batch; match: frame capture to decision)", ["stage"],
                                 buckets=LATENCY_BUCKETS_MS, registry=self.registry)
        self.registry.register(self)

    def on_report(self, body: dict) -> None:
        stage = body.get("stage")
        if not isinstance(stage, str) or body.get("kind") not in ("stats", "done"):
            return
        counters = body.get("counters")
        samples = body.get("latency_new_ms") or []
        with self.lock:
            if isinstance(counters, dict):
                self.counters[stage] = {k: v for k, v in counters.items() if isinstance(v, int)}
            kind = stage.split(":")[0]
            for v in samples:
                if isinstance(v, int | float):
                    self.latency.labels(kind).observe(float(v))

    def _sum(self, kind: str, name: str) -> int:
        return sum(c.get(name, 0) for s, c in self.counters.items() if s.split(":")[0] == kind)

    def collect(self) -> Iterable:
        with self.lock:
            for metric, help_, kind, name in COUNTERS:
                yield CounterMetricFamily(metric, help_, value=self._sum(kind, name))
            dropped = CounterMetricFamily("reid_dropped", "frames, crops and messages dropped (live skips, bad "
                                          "input)", labels=["stage"])
            malformed = CounterMetricFamily("reid_malformed_messages", "messages that did not decode",
                                            labels=["stage"])
            for stage, c in sorted(self.counters.items()):
                dropped.add_metric([stage], sum(c.get(k, 0) for k in DROP_COUNTERS))
                malformed.add_metric([stage], c.get("malformed", 0))
            yield dropped
            yield malformed
            yield CounterMetricFamily("reid_dropped_frames", "frames skipped to keep up with live cameras",
                                      value=sum(c.get("dropped_frames", 0) for c in self.counters.values()))
        restarts = CounterMetricFamily("reid_stage_restarts", "stage processes restarted after dying",
                                       labels=["stage"])
        alive = GaugeMetricFamily("reid_stage_up", "1 while the stage process runs", labels=["stage"])
        for p in self.procs():
            restarts.add_metric([p.key], p.restarts)
            alive.add_metric([p.key], int(p.alive))
        yield restarts
        yield alive
        yield GaugeMetricFamily("reid_identities", "identities in the store", value=self.identities())

    def describe(self) -> Iterable:
        return []  # collected at scrape time; no fixed description to check at registration
