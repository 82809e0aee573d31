"""HA-CNN: Harmonious Attention CNN (Li, Zhu, Gong, "Harmonious Attention Network for Person
Re-Identification", CVPR 2018).

Reads top-down: layers, Inception blocks, the Harmonious Attention module, the region sampler, the network,
then the factory. Differences from torchreid's reference implementation, each on purpose:

* The input is RGB in [0, 1]; mean/std normalisation lives inside the model as buffers, so every exported
  backend (ONNX, TensorRT) gets it for free and no caller can forget it.
* Hard-attention regions are sampled with ``grid_sample`` on a grid built from plain tensor ops
  (:func:`region_grid`), never ``affine_grid``: TensorRT's ONNX parser has GridSample but no AffineGrid.
* Regions are sampled straight at the local stream's input size (one interpolation instead of torchreid's
  sample-then-upsample), and the T regions are folded into the batch so the shared local Inception-B runs
  once per level instead of T times.
* The soft-attention fusion is 1x1 conv + BN + sigmoid as in the paper (torchreid puts a ReLU before the
  sigmoid, which pins every attention weight to >= 0.5).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reid.model_spec import (  # noqa: F401 - re-exported
    EMBEDDING_DIM,
    FEAT_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_HEIGHT,
    INPUT_SHAPE,
    INPUT_WIDTH,
)

# ---------------------------------------------------------------------------------------------------------
# Basic layers
# ---------------------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Conv + BN + ReLU, the unit every HA-CNN block is built from."""

    def __init__(self, in_c: int, out_c: int, k: int, s: int = 1, p: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, k, stride=s, padding=p, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    """Inception-A (Fig. 2(a)): four streams at constant resolution, each ``out_c // 4`` channels."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        mid = out_c // 4
        self.stream1 = nn.Sequential(ConvBlock(in_c, mid, 1), ConvBlock(mid, mid, 3, p=1))
        self.stream2 = nn.Sequential(ConvBlock(in_c, mid, 1), ConvBlock(mid, mid, 3, p=1))
        self.stream3 = nn.Sequential(ConvBlock(in_c, mid, 1), ConvBlock(mid, mid, 3, p=1))
        self.stream4 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), ConvBlock(in_c, mid, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.stream1(x), self.stream2(x), self.stream3(x), self.stream4(x)], 1)


class InceptionB(nn.Module):
    """Inception-B (Fig. 2(b)): three streams that halve the resolution."""

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        mid = out_c // 4
        self.stream1 = nn.Sequential(ConvBlock(in_c, mid, 1), ConvBlock(mid, mid, 3, s=2, p=1))
        self.stream2 = nn.Sequential(
            ConvBlock(in_c, mid, 1), ConvBlock(mid, mid, 3, p=1), ConvBlock(mid, mid, 3, s=2, p=1)
        )
        self.stream3 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), ConvBlock(in_c, out_c - 2 * mid, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.stream1(x), self.stream2(x), self.stream3(x)], 1)


# ---------------------------------------------------------------------------------------------------------
# Harmonious Attention (Sec. 3.1)
# ---------------------------------------------------------------------------------------------------------


class SpatialAttention(nn.Module):
    """Spatial attention (Sec. 3.1.I.1): cross-channel mean, 3x3 s2 conv, upsample, 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBlock(1, 1, 3, s=2, p=1)
        self.conv2 = ConvBlock(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        y = self.conv1(x.mean(1, keepdim=True))
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return self.conv2(y)  # (B, 1, H, W)


class ChannelAttention(nn.Module):
    """Channel attention (Sec. 3.1.I.2): squeeze-and-excitation with reduction ``r``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = ConvBlock(channels, channels // reduction, 1)
        self.conv2 = ConvBlock(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1)))  # (B, C, 1, 1)


class SoftAttention(nn.Module):
    """Soft attention (Sec. 3.1.I): spatial x channel, fused by a 1x1 conv and squashed to (0, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.spatial = SpatialAttention()
        self.channel = ChannelAttention(channels)
        self.fuse = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.fuse(self.spatial(x) * self.channel(x))))


class HardAttention(nn.Module):
    """Hard regional attention (Sec. 3.1.II): a translation (tx, ty) in [-1, 1] for each of T regions.

    Initialised (zero weights, striped biases) to T horizontal stripes covering the image top to bottom, so
    training starts from the classic part-based layout and learns where to move each stripe.
    """

    def __init__(self, channels: int, num_regions: int) -> None:
        super().__init__()
        self.num_regions = num_regions
        self.fc = nn.Linear(channels, num_regions * 2)
        centres = torch.linspace(-1 + 1 / num_regions, 1 - 1 / num_regions, num_regions)
        with torch.no_grad():
            self.fc.weight.zero_()
            # atanh, so that after the tanh the stripe centres sit exactly at the T quarter centres.
            self.fc.bias.copy_(torch.stack([torch.zeros(num_regions), torch.atanh(centres)], 1).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)))
        return t.view(-1, self.num_regions, 2)  # (B, T, 2)


class HarmoniousAttention(nn.Module):
    """Harmonious Attention module: soft attention map and hard-region translations from one feature map."""

    def __init__(self, channels: int, num_regions: int) -> None:
        super().__init__()
        self.soft = SoftAttention(channels)
        self.hard = HardAttention(channels, num_regions)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.soft(x), self.hard(x)


# ---------------------------------------------------------------------------------------------------------
# Region sampling (the STN of Sec. 3.1.II) from plain ops
# ---------------------------------------------------------------------------------------------------------


def region_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling grid of the affine maps ``theta`` (N, 2, 3), equal to
    ``F.affine_grid(theta, (N, C, height, width), align_corners=False)``.

    Built from Mul/Add on broadcast coordinates so the ONNX graph carries no AffineGrid node, which
    TensorRT's ONNX parser cannot import.
    """
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    xs = xs.view(1, 1, width)
    ys = ys.view(1, height, 1)
    t = theta.unsqueeze(-1).unsqueeze(-1)  # (N, 2, 3, 1, 1)
    gx = t[:, 0, 0] * xs + t[:, 0, 1] * ys + t[:, 0, 2]
    gy = t[:, 1, 0] * xs + t[:, 1, 1] * ys + t[:, 1, 2]
    return torch.stack([gx, gy], dim=-1)  # (N, H, W, 2)


def sample_regions(x: torch.Tensor, shifts: torch.Tensor, scale: tuple[float, float], size: tuple[int, int]):
    """Crop T regions of fixed ``scale`` (sx, sy) translated by ``shifts`` (B, T, 2) out of ``x``.

    All regions come out of one ``grid_sample`` call (region grids stacked along the height axis) and are
    returned with regions folded into the batch: (B * T, C, h, w), region index fastest.
    """
    b, t, _ = shifts.shape
    h, w = size
    theta = torch.zeros(b * t, 2, 3, device=x.device, dtype=x.dtype)
    theta = theta + torch.tensor([[scale[0], 0.0, 0.0], [0.0, scale[1], 0.0]], device=x.device, dtype=x.dtype)
    theta = theta + F.pad(shifts.reshape(b * t, 2, 1), (2, 0))
    grid = region_grid(theta, h, w).view(b, t * h, w, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    c = x.shape[1]
    return out.view(b, c, t, h, w).transpose(1, 2).reshape(b * t, c, h, w)


# ---------------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------------


class HACNNOutput(NamedTuple):
    """Training-mode output: logits of both heads and the features they were computed from."""

    logits_global: torch.Tensor
    logits_local: torch.Tensor
    feat_global: torch.Tensor
    feat_local: torch.Tensor


class HACNN(nn.Module):
    """Harmonious Attention CNN.

    Train mode returns :class:`HACNNOutput` (softmax cross-entropy on both heads, features for metric
    losses); eval mode returns the (B, 2 * feat_dim) embedding, global and local halves each L2-normalised.
    Input: (B, *INPUT_SHAPE) = (B, 3, 160, 64) RGB in [0, 1].
    """

    # Local-stream input sizes per level, as in the reference implementation: the region that the hard
    # attention of level l selects is resampled to this size before the shared Inception-B of level l.
    LOCAL_SIZES = ((24, 28), (12, 14), (6, 7))
    REGION_SCALE = (1.0, 0.25)  # full width, quarter height (Sec. 3.1.II, fixed scale)

    def __init__(
        self,
        num_classes: int,
        channels: tuple[int, int, int] = (128, 256, 384),
        feat_dim: int = FEAT_DIM,
        num_regions: int = 4,
    ) -> None:
        super().__init__()
        self.config = {
            "num_classes": num_classes,
            "channels": list(channels),
            "feat_dim": feat_dim,
            "num_regions": num_regions,
        }
        self.num_regions = num_regions
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        c1, c2, c3 = channels
        self.stem = ConvBlock(3, 32, 3, s=2, p=1)
        # Global branch: Inception-A + Inception-B per level, each followed by Harmonious Attention.
        self.global_blocks = nn.ModuleList(
            [nn.Sequential(InceptionA(i, o), InceptionB(o, o)) for i, o in ((32, c1), (c1, c2), (c2, c3))]
        )
        self.attentions = nn.ModuleList([HarmoniousAttention(c, num_regions) for c in channels])
        # Local branch: one Inception-B per level, its weights shared by the T region streams.
        self.local_blocks = nn.ModuleList([InceptionB(i, o) for i, o in ((32, c1), (c1, c2), (c2, c3))])

        self.fc_global = nn.Sequential(nn.Linear(c3, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU())
        self.fc_local = nn.Sequential(nn.Linear(c3 * num_regions, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU())
        self.classifier_global = nn.Linear(feat_dim, num_classes)
        self.classifier_local = nn.Linear(feat_dim, num_classes)
        self._init_params()

    @property
    def embedding_dim(self) -> int:
        return 2 * self.config["feat_dim"]

    def _init_params(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for fc in (self.fc_global[0], self.fc_local[0]):
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        for cls in (self.classifier_global, self.classifier_local):
            nn.init.normal_(cls.weight, std=0.01)
            nn.init.zeros_(cls.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | HACNNOutput:
        if x.shape[2:] != (INPUT_HEIGHT, INPUT_WIDTH):
            raise ValueError(
                f"HA-CNN expects input of height x width {INPUT_HEIGHT}x{INPUT_WIDTH}, got {tuple(x.shape)}"
            )
        x = (x - self.pixel_mean) / self.pixel_std
        x = self.stem(x)  # (B, 32, 80, 32)
        b = x.shape[0]

        global_in = x
        local = None
        for level in range(3):
            # Region selection reads the input of this level's global block (Sec. 3.1.II, 3.2).
            g = self.global_blocks[level](global_in)  # (B, c_l, H/2, W/2)
            soft, shifts = self.attentions[level](g)
            regions = sample_regions(global_in, shifts, self.REGION_SCALE, self.LOCAL_SIZES[level])
            if local is not None:
                # Cross-attention interaction: the previous local output enriches this level's regions.
                regions = regions + local
            local = self.local_blocks[level](regions)  # (B*T, c_l, h/2, w/2)
            global_in = g * soft

        feat_global = self.fc_global(F.adaptive_avg_pool2d(global_in, 1).flatten(1))  # (B, feat_dim)
        local_pooled = F.adaptive_avg_pool2d(local, 1).reshape(b, -1)  # (B, T * c3)
        feat_local = self.fc_local(local_pooled)  # (B, feat_dim)

        if not self.training:
            return torch.cat([F.normalize(feat_global, dim=1), F.normalize(feat_local, dim=1)], 1)
        return HACNNOutput(
            self.classifier_global(feat_global), self.classifier_local(feat_local), feat_global, feat_local
        )


# ---------------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------------

_MODELS = {"hacnn": HACNN}


def build_model(name: str = "hacnn", **kwargs) -> nn.Module:
    """Build a model by name; an unknown name lists the valid ones."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; valid names: {sorted(_MODELS)}")
    return _MODELS[name](**kwargs)


def count_parameters(model: nn.Module, include_classifiers: bool = False) -> int:
    """Parameters of the embedding network (the classifiers only exist for training)."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if include_classifiers or not n.startswith("classifier_")
    )
