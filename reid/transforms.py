"""Image transforms, defined once for training, evaluation and every inference backend.

Test-time preprocessing is a resize to the network's 160x64 input (area interpolation, which is what a
downscale of a detector crop needs) plus a channel-order swap for BGR crops from OpenCV; the mean/std
normalisation lives inside the model. Training augmentation runs batched on tensors on the training device
(flip, pad + random crop, random erasing), so a GPU is never starved by per-image Python work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from reid.model_spec import IMAGENET_MEAN, INPUT_HEIGHT, INPUT_WIDTH


class EmptyCropError(ValueError):
    """A crop with no pixels, the wrong layout or non-finite values."""


def resize_rgb(image: np.ndarray, height: int = INPUT_HEIGHT, width: int = INPUT_WIDTH) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to the network input size."""
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if image.shape[0] >= height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def preprocess_bgr(crops: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops of any size -> float32 (N, 3, 160, 64) RGB in [0, 1], the input of every backend.

    Raises :class:`EmptyCropError` naming the crop index for an empty or malformed crop, so one bad box
    never poisons a whole batch silently.
    """
    out = np.empty((len(crops), INPUT_HEIGHT, INPUT_WIDTH, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3:
            shape = getattr(crop, "shape", None)
            raise EmptyCropError(f"crop {i}: expected an (H, W, 3) BGR array, got shape {shape}")
        if crop.shape[0] == 0 or crop.shape[1] == 0:
            raise EmptyCropError(f"crop {i}: empty crop of shape {crop.shape}")
        if crop.dtype != np.uint8:
            if not np.isfinite(crop).all():
                raise EmptyCropError(f"crop {i}: contains NaN or infinite values")
            crop = np.clip(crop, 0, 255).astype(np.uint8)
        out[i] = resize_rgb(crop)[:, :, ::-1]  # BGR -> RGB
    return out.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # NHWC -> NCHW


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [0, 1]."""
    return images.float().div_(255.0)


class TrainAugment:
    """Batched training augmentation on uint8 (B, 3, H, W) tensors; returns float in [0, 1].

    Random horizontal flip, zero-pad by ``pad`` pixels then crop back at a random offset (the misalignment
    a detector produces), and random erasing (Zhong et al., AAAI 2020) filled with the dataset mean so an
    erased patch normalises to zero. Batched tensor ops only, so it runs where the images are (the GPU, with a
    generator on the GPU).
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        pad: int = 10,
        erase_p: float = 0.5,
        erase_area: tuple[float, float] = (0.02, 0.4),
        erase_ratio: float = 0.3,
        generator: torch.Generator | None = None,
    ) -> None:
        self.flip_p, self.pad, self.erase_p = flip_p, pad, erase_p
        self.erase_area, self.erase_ratio = erase_area, erase_ratio
        self.g = generator

    def _rand(self, *shape: int) -> torch.Tensor:
        # On the generator's device: with a CUDA generator the whole augmentation stays on the GPU, no copies.
        return torch.rand(*shape, generator=self.g, device=self.g.device if self.g is not None else "cpu")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        b, _, h, w = x.shape
        dev = x.device
        if self.flip_p > 0:
            flip = (self._rand(b) < self.flip_p).to(dev).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
        if self.pad > 0:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            # Per-sample crop offsets, gathered through index arithmetic: one op for the whole batch.
            oy = (self._rand(b) * (2 * p + 1)).long().clamp_(max=2 * p).to(dev)
            ox = (self._rand(b) * (2 * p + 1)).long().clamp_(max=2 * p).to(dev)
            rows = (oy.view(b, 1) + torch.arange(h, device=dev)).view(b, 1, h, 1).expand(b, 3, h, w + 2 * p)
            x = padded.gather(2, rows)
            cols = (ox.view(b, 1) + torch.arange(w, device=dev)).view(b, 1, 1, w).expand(b, 3, h, w)
            x = x.gather(3, cols)
        if self.erase_p > 0:
            x = self._erase(x)
        return x

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        area = h * w * (self.erase_area[0] + self._rand(b) * (self.erase_area[1] - self.erase_area[0]))
        log_r = math.log(self.erase_ratio)
        ratio = torch.exp(log_r + self._rand(b) * (-2 * log_r))
        eh = torch.sqrt(area * ratio).round().clamp(1, h - 1)
        ew = torch.sqrt(area / ratio).round().clamp(1, w - 1)
        y0 = (self._rand(b) * (h - eh + 1)).floor()
        x0 = (self._rand(b) * (w - ew + 1)).floor()
        apply = self._rand(b) < self.erase_p
        ys = torch.arange(h, device=apply.device).view(1, h, 1)
        xs = torch.arange(w, device=apply.device).view(1, 1, w)
        mask = (
            (ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1))
            & (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1))
            & apply.view(b, 1, 1)
        ).to(dev)
        fill = torch.tensor(IMAGENET_MEAN, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
        return torch.where(mask.unsqueeze(1), fill, x)
