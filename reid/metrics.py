"""Re-ID evaluation: distances, CMC and mAP under the Market-1501 protocol, k-reciprocal re-ranking.

Protocol: for each query, gallery images of the same identity taken by the same camera are removed (they are
trivial matches), junk (id -1) is never scored, distractors (id 0) are ordinary non-matches, and a query with
no remaining true match is not counted. CMC is the share of queries whose first true match is at rank <= k;
AP is the mean of the precisions at each true match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from reid.data import JUNK_PID


@dataclass
class RankResult:
    cmc: np.ndarray  # (max_rank,) fractions
    mAP: float  # fraction
    num_valid_queries: int

    def as_percent(self) -> dict[str, float]:
        return {
            "rank1": 100 * float(self.cmc[0]),
            "rank5": 100 * float(self.cmc[min(4, len(self.cmc) - 1)]),
            "rank10": 100 * float(self.cmc[min(9, len(self.cmc) - 1)]),
            "mAP": 100 * self.mAP,
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cmc"] = self.cmc.tolist()
        return d


def distance_matrix(q: np.ndarray, g: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(Nq, Ng) float64 distances, smaller = more similar."""
    q = np.asarray(q, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        return 1.0 - qn @ gn.T
    if metric == "euclidean":
        d = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T
        return np.sqrt(np.maximum(d, 0.0))
    raise ValueError(f"unknown metric {metric!r}; valid: ['cosine', 'euclidean']")


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 10,
) -> RankResult:
    """CMC and mAP under the Market-1501 protocol (see the module docstring)."""
    distmat = np.asarray(distmat)
    num_q, num_g = distmat.shape
    if len(q_pids) != num_q or len(g_pids) != num_g:
        raise ValueError(f"distmat {distmat.shape} does not match {len(q_pids)} queries / {len(g_pids)} gallery")
    keep_g = g_pids != JUNK_PID
    distmat, g_pids, g_camids = distmat[:, keep_g], g_pids[keep_g], g_camids[keep_g]
    max_rank = min(max_rank, distmat.shape[1])

    order = np.argsort(distmat, axis=1, kind="stable")
    gp, gc = g_pids[order], g_camids[order]
    matches = gp == q_pids[:, None]
    valid = ~((gp == q_pids[:, None]) & (gc == q_camids[:, None]))

    cmcs, aps = [], []
    for i in range(num_q):
        if q_pids[i] == JUNK_PID:
            continue
        hits = matches[i][valid[i]]
        if not hits.any():
            continue
        cum = hits.cumsum()
        cmcs.append((cum[:max_rank] >= 1).astype(np.float64))
        precision = cum / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    if not cmcs:
        raise ValueError("no query has a valid match in the gallery")
    return RankResult(np.mean(cmcs, axis=0), float(np.mean(aps)), len(cmcs))


def re_ranking(
    q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017): Jaccard distance of k-reciprocal neighbour sets,
    blended with the original distance. Inputs are distance matrices; returns the (Nq, Ng) final distance."""
    num_q = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float32)
    n = full.shape[0]
    full = full / np.maximum(full.max(axis=0, keepdims=True), 1e-12)
    full = full.T  # column-normalised, then rows index probes
    rank = np.argsort(full, axis=1).astype(np.int32)
    k1 = min(k1, n - 1)
    v = np.zeros((n, n), dtype=np.float32)

    def k_reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, : k + 1]
        backward = rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    for i in range(n):
        expansion = k_reciprocal(i, k1)
        extended = expansion
        for cand in expansion:
            cand_set = k_reciprocal(cand, int(np.around(k1 / 2)))
            if len(np.intersect1d(cand_set, expansion)) > 2 / 3 * len(cand_set):
                extended = np.append(extended, cand_set)
        extended = np.unique(extended)
        w = np.exp(-full[i, extended])
        v[i, extended] = w / w.sum()

    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])

    inv_index = [np.where(v[:, j] != 0)[0] for j in range(n)]
    jaccard = np.zeros((num_q, n), dtype=np.float32)
    for i in range(num_q):
        temp_min = np.zeros(n, dtype=np.float32)
        nz = np.where(v[i] != 0)[0]
        for j in nz:
            rows = inv_index[j]
            temp_min[rows] += np.minimum(v[i, j], v[rows, j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)

    original = full[:num_q]
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:, num_q:].astype(np.float64)
