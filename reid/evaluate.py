"""Evaluate HA-CNN weights on a Market-layout query/gallery split.

    python -m reid.evaluate [--weights W] [--data DIR] [--rerank] [--metric cosine] [--json] [--out DIR]

Prints Rank-1/5/10 and mAP (``--json``: one JSON object on stdout, percentages); with ``--out`` also writes
``cmc.png`` and ``ranked.png`` (each query beside its top-10 gallery images, green = same identity).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reid.data import DatasetError, MarketDataset, Split, load_images, load_market
from reid.features import extract_embeddings
from reid.log import setup_logging
from reid.metrics import RankResult, distance_matrix, evaluate_rank, re_ranking
from reid.paths import DEFAULT_WEIGHTS, default_dataset
from reid.weights import WeightsError, load_model

log = logging.getLogger("reid.evaluate")


@dataclass
class EvalSet:
    """A query/gallery pair with its images decoded once (reused at every evaluation during training)."""

    query: Split
    gallery: Split
    query_images: torch.Tensor
    gallery_images: torch.Tensor

    @classmethod
    def from_dataset(cls, ds: MarketDataset) -> EvalSet:
        return cls(ds.query, ds.gallery, load_images(ds.query.samples), load_images(ds.gallery.samples))


def evaluate_model(
    model: nn.Module, data: EvalSet, metric: str = "cosine", rerank: bool = False, batch_size: int = 128
) -> tuple[RankResult, np.ndarray]:
    """Rank result and the (Nq, Ng) distance matrix it was computed from."""
    qf = extract_embeddings(model, data.query_images, batch_size)
    gf = extract_embeddings(model, data.gallery_images, batch_size)
    dist = distance_matrix(qf, gf, metric)
    if rerank:
        dist = re_ranking(dist, distance_matrix(qf, qf, metric), distance_matrix(gf, gf, metric))
    q, g = data.query, data.gallery
    return evaluate_rank(dist, q.pids, g.pids, q.camids, g.camids), dist


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reid.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights file (default: %(default)s)")
    p.add_argument("--data", type=Path, default=None,
                   help="Market-layout dataset (default: $REID_SHARED/datasets/cuhk03_p1)")
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", type=Path, default=None, help="folder for cmc.png and ranked.png")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    data_root = args.data or default_dataset()
    try:
        model = load_model(args.weights, args.device)
        ds = load_market(data_root)
    except (WeightsError, DatasetError) as e:
        log.error("%s", e)
        return 2
    t0 = time.perf_counter()
    evalset = EvalSet.from_dataset(ds)
    result, dist = evaluate_model(model, evalset, args.metric, args.rerank, args.batch_size)
    elapsed = time.perf_counter() - t0
    scores = result.as_percent()
    log.info("evaluated %s on %s in %.1f s", args.weights, data_root, elapsed)

    if args.out:
        from reid.visualize import draw_ranked_lists, plot_cmc

        args.out.mkdir(parents=True, exist_ok=True)
        label = f"HA-CNN{' + re-ranking' if args.rerank else ''}"
        plot_cmc({label: result.cmc}, args.out / "cmc.png", title=f"CMC on {data_root.name}")
        draw_ranked_lists(dist, ds.query.samples, ds.gallery.samples, args.out / "ranked.png")
        log.info("wrote %s and %s", args.out / "cmc.png", args.out / "ranked.png")

    if args.json:
        out = {k: round(v, 4) for k, v in scores.items()}
        out.update(num_query=len(ds.query), num_gallery=len(ds.gallery), metric=args.metric, rerank=args.rerank,
                   weights=str(args.weights))
        print(json.dumps(out))
    else:
        print(f"data     {data_root}  ({len(ds.query)} query / {len(ds.gallery)} gallery)")
        print(f"weights  {args.weights}  metric={args.metric} rerank={args.rerank}")
        print(f"Rank-1 {scores['rank1']:6.2f}  Rank-5 {scores['rank5']:6.2f}  "
              f"Rank-10 {scores['rank10']:6.2f}  mAP {scores['mAP']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
