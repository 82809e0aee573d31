"""Hand-made unit embeddings and tracks for the identity tests: cosines set exactly, or random but seeded."""

from __future__ import annotations

import numpy as np

from reid.identity.matcher import TrackSummary

D = 1024


def gram_vectors(gram: list[list[float]], seed: int = 0) -> list[np.ndarray]:
    """Unit vectors in R^D whose pairwise cosines are exactly ``gram``."""
    g = np.asarray(gram, dtype=np.float64)
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, len(g))))
    vecs = np.linalg.cholesky(g) @ basis.T
    return [(v / np.linalg.norm(v)).astype(np.float32) for v in vecs]


def unit(seed: int, base: np.ndarray | None = None, noise: float = 0.0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(D)
    v /= np.linalg.norm(v)
    if base is not None:
        v = base + noise * v
    return (v / np.linalg.norm(v)).astype(np.float32)


def track(camera: str, tid: int, start: float, end: float, emb: np.ndarray, crops: int = 4) -> TrackSummary:
    return TrackSummary(camera, tid, start, end, emb, num_crops=crops, quality=1.0)
