"""Re-ID accuracy of any backend on a Market-layout query/gallery split, so a faster backend or a lower
precision is only offered when it keeps the numbers (the int8 gate of ``trt_engines.quantize``)."""

from __future__ import annotations

from pathlib import Path

from reid.data import load_market
from reid.evaluate import EvalSet
from reid.metrics import RankResult, distance_matrix, evaluate_rank
from trt_engines.embedder import Embedder


def load_evalset(data_root: str | Path) -> EvalSet:
    return EvalSet.from_dataset(load_market(data_root))


def evaluate_embedder(embedder: Embedder, data: EvalSet) -> RankResult:
    qf = embedder.embed_preprocessed(data.query_images.numpy().astype("float32") / 255.0)
    gf = embedder.embed_preprocessed(data.gallery_images.numpy().astype("float32") / 255.0)
    q, g = data.query, data.gallery
    return evaluate_rank(distance_matrix(qf, gf), q.pids, g.pids, q.camids, g.camids)
