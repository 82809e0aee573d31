"""Training losses: (label-smoothed) softmax cross-entropy and batch-hard triplet."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Triplet loss with the hardest positive and hardest negative of each anchor in the batch
    (Hermans et al., 2017). Needs identity-balanced (PK) batches to have positives.

    Computed on L2-normalised features, the geometry the embedding is matched in. On the raw post-ReLU
    features (norm ~16) the triplet term swamped the cross-entropy under Adam: in a measured 10-epoch run
    the classification loss stayed at chance level (training accuracy 1 %).
    """
    f = F.normalize(features.float(), dim=1)
    dist = torch.cdist(f, f).clamp_min(1e-12)
    same = labels.view(-1, 1) == labels.view(1, -1)
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()
