"""Training losses: (label-smoothed) softmax cross-entropy and batch-hard triplet."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                  apart: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy with label smoothing; with ``apart`` ((C, C) bool: class j may be trained as another
    person than class i), a sample competes only with the classes proven apart from its own: the others are left
    out of its softmax (and of the smoothing), so nothing pushes it away from a class that may be its own person."""
    if apart is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    keep = apart[labels] | F.one_hot(labels, logits.shape[1]).bool()
    logp = torch.log_softmax(logits.masked_fill(~keep, float("-inf")), dim=1).masked_fill(~keep, 0.0)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)
    smooth = -logp.sum(1) / keep.sum(1)
    return ((1 - label_smoothing) * nll + label_smoothing * smooth).mean()


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                       apart: torch.Tensor | None = None) -> torch.Tensor:
    """Triplet loss with the hardest positive and hardest negative of each anchor in the batch
    (Hermans et al., 2017). Needs identity-balanced (PK) batches to have positives.

    Computed on L2-normalised features, the geometry the embedding is matched in. On the raw post-ReLU
    features (norm ~16) the triplet term swamped the cross-entropy under Adam: in a measured 10-epoch run
    the classification loss stayed at chance level (training accuracy 1 %).

    With ``apart`` (see :func:`cross_entropy`), only samples of classes proven apart are negatives; an anchor
    without one adds nothing.
    """
    f = F.normalize(features.float(), dim=1)
    dist = torch.cdist(f, f).clamp_min(1e-12)
    same = labels.view(-1, 1) == labels.view(1, -1)
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    negative = ~same if apart is None else apart[labels][:, labels]
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()
