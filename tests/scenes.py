"""Scripted scenes for the identity tests: per-camera track reports with chosen embeddings, as the embed stage
sends them (``EmbeddingsMsg``), so the same scene drives the identity tracker alone and the real match stage."""

from __future__ import annotations

import numpy as np

from detectors.types import TrackState
from pipeline.messages import EmbeddingsMsg, TrackEntry


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def frame(cam: str, ts: float, rows: list[tuple[int, TrackState, np.ndarray | None]]) -> EmbeddingsMsg:
    """One frame of ``cam``: (track, state, embedding or None) per track seen."""
    embs = [e for _, _, e in rows if e is not None]
    entries, k = [], 0
    for tid, state, e in rows:
        x = 60.0 * tid
        entries.append(TrackEntry(tid, state, int(ts * 25), ts, (x, 20.0, x + 30, 120.0), 0.9, 0.5, (),
                                  k if e is not None else -1))
        k += e is not None
    return EmbeddingsMsg(cam, int(ts * 25), ts, tuple(entries),
                         np.stack(embs) if embs else np.zeros((0, 1024), np.float32))


def scene() -> tuple[list[EmbeddingsMsg], dict[str, np.ndarray]]:
    """c1, 0-3.5 s: X and Y, two similar people (cosine 0.9), side by side. c0, 5-12.5 s: A, nearly as close to
    Y as to X (within the 0.03 margin), and from 7.5 s B, who is plainly Y, beside A."""
    rng = np.random.default_rng(7)
    p, q, r = (rng.standard_normal(1024) for _ in range(3))
    x = unit(p)
    y = unit(0.9 * x + np.sqrt(1 - 0.81) * unit(q - (q @ x) * x))
    a = unit(1.1 * x + y + 0.05 * unit(r))
    msgs = []
    for ts in np.arange(0.0, 3.01, 0.5):
        state = TrackState.STARTED if ts == 0 else TrackState.ACTIVE
        crop = ts in (0.0, 1.0)
        msgs.append(frame("c1", ts, [(1, state, x if crop else None), (2, state, y if crop else None)]))
    msgs.append(frame("c1", 3.5, [(1, TrackState.ENDED, None), (2, TrackState.ENDED, None)]))
    for ts in np.arange(5.0, 12.01, 0.5):
        rows = [(1, TrackState.STARTED if ts == 5 else TrackState.ACTIVE, a if ts in (5.0, 6.0) else None)]
        if ts >= 7.5:
            rows.append((2, TrackState.STARTED if ts == 7.5 else TrackState.ACTIVE, y if ts in (7.5, 8.5) else None))
        msgs.append(frame("c0", ts, rows))
    msgs.append(frame("c0", 12.5, [(1, TrackState.ENDED, None), (2, TrackState.ENDED, None)]))
    return msgs, {"x": x, "y": y, "a": a}
