"""Batched embedding extraction for evaluation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reid.transforms import to_float


@torch.inference_mode()
def extract_embeddings(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """uint8 (N, 3, 160, 64) images -> float32 (N, D) embeddings, with the model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        batch = to_float(images[i : i + batch_size].to(device, non_blocking=True))
        out.append(model(batch).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()
