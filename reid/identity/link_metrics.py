"""How well tracks were linked to the people behind them: IDF1 and the per-track link outcomes.

Why next to the matcher rather than in the benchmark CLI: they score any run of :class:`Matcher` against ground
truth (the CUHK03 benchmark, a threshold sweep, a test on hand-made tracks) and need no model, so they belong to
the identity half. Over the tracks of the batches after the first, :func:`link_scores` counts

- ``correct_link``: given the right identity (the one holding the person's earlier track; a new one for a
  person not seen before),
- ``false_merge``: put into another person's identity,
- ``false_new``: given a new identity although the person already had one,

and :func:`idf1` scores all tracks (one unit per track; identities mapped one-to-one to people by the Hungarian
method, as in Ristani et al., ECCV 2016 workshops).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from reid.identity.matcher import MatchResult, TrackSummary


@dataclass
class LinkTrack:
    """A track to match, with the person it truly shows (``pid``): the ground truth the scores compare with."""

    summary: TrackSummary
    pid: int


def idf1(gt: Sequence[int], pred: Sequence[int], weights: Sequence[float] | None = None) -> float:
    """ID F1 of predicted identities against true ones: 2 IDTP / (2 IDTP + IDFP + IDFN) under the one-to-one
    mapping of identities to people that maximises IDTP."""
    gt_a, pred_a = np.asarray(gt), np.asarray(pred)
    w = np.ones(len(gt_a)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(gt_a) == 0:
        return 0.0
    gi = {g: i for i, g in enumerate(np.unique(gt_a))}
    pi = {p: i for i, p in enumerate(np.unique(pred_a))}
    overlap = np.zeros((len(gi), len(pi)))
    for g, p, x in zip(gt_a, pred_a, w, strict=True):
        overlap[gi[g], pi[p]] += x
    r, c = linear_sum_assignment(-overlap)
    idtp = overlap[r, c].sum()
    return float(2 * idtp / (2 * w.sum()))  # IDTP+IDFN = IDTP+IDFP = total weight: each track has one of each


def link_scores(batches: Sequence[Sequence[LinkTrack]], results: Sequence[Sequence[MatchResult]]) -> dict[str, float]:
    """correct_link / false_merge / false_new over the batches after the first, and IDF1 over all tracks."""
    holder: dict[int, set[int]] = defaultdict(set)  # person -> identities holding their earlier tracks
    counts = {"correct_link": 0, "false_merge": 0, "false_new": 0}
    gt, pred = [], []
    for b, (batch, res) in enumerate(zip(batches, results, strict=True)):
        for t, r in zip(batch, res, strict=True):
            gt.append(t.pid)
            pred.append(r.global_id)
            if b > 0:
                right = holder[t.pid]
                if r.global_id in right or (not right and r.is_new):
                    counts["correct_link"] += 1
                elif r.is_new:
                    counts["false_new"] += 1
                else:
                    counts["false_merge"] += 1
        for t, r in zip(batch, res, strict=True):
            holder[t.pid].add(r.global_id)
    n_link = max(sum(len(b) for b in batches[1:]), 1)
    out: dict[str, float] = {k: v / n_link for k, v in counts.items()}
    out["idf1"] = idf1(gt, pred)
    out["num_tracks"] = len(gt)
    out["num_linking_tracks"] = sum(len(b) for b in batches[1:])
    out["num_identities"] = len(set(pred))
    return out
