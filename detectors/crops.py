"""Person crops cut from a frame: clamped boxes, optional context padding, and a quality verdict per crop.

Crops are numpy *views* into the frame (no copy): most of them are only scored and dropped, and the few
that are sent are copied once by ``TrackCrop.materialized()``. The quality verdict lets the matcher weigh or
skip poor crops instead of letting a half-visible or motion-blurred person pull an identity's prototype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def clamp_boxes(xyxy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boxes clipped to a frame of ``shape`` (H, W[, C]): float32 (N, 4), ``0 <= x <= W`` and ``0 <= y <= H``."""
    h, w = shape[:2]
    out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out


def pixel_boxes(xyxy: np.ndarray, shape: tuple[int, ...], pad_frac: float = 0.0) -> np.ndarray:
    """Integer slice bounds int64 (N, 4) for the boxes, padded by ``pad_frac`` of their size on each side.

    Rounds outwards (floor/ceil) so a crop never loses the edge of the person, then clamps to the frame; a box
    wholly outside the frame gives an empty slice (x1 == x2 or y1 == y2).
    """
    if pad_frac < 0:
        raise ValueError(f"pad_frac must be >= 0, got {pad_frac}")
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if pad_frac:
        pw = (b[:, 2] - b[:, 0]) * pad_frac
        ph = (b[:, 3] - b[:, 1]) * pad_frac
        b = b + np.stack([-pw, -ph, pw, ph], axis=1)
    h, w = shape[:2]
    out = np.empty(b.shape, dtype=np.int64)
    out[:, 0] = np.clip(np.floor(b[:, 0]), 0, w)
    out[:, 1] = np.clip(np.floor(b[:, 1]), 0, h)
    out[:, 2] = np.clip(np.ceil(b[:, 2]), 0, w)
    out[:, 3] = np.clip(np.ceil(b[:, 3]), 0, h)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out


def crop_views(frame: np.ndarray, xyxy: np.ndarray, pad_frac: float = 0.0) -> list[np.ndarray]:
    """One view into ``frame`` per box (padded, clamped); no pixels are copied. Empty boxes give empty views."""
    return [frame[y1:y2, x1:x2] for x1, y1, x2, y2 in pixel_boxes(xyxy, frame.shape, pad_frac).tolist()]


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the crop verdicts; defaults suit HA-CNN's 160x64 input and 25-30 fps CCTV frames.

    A box is "small" below ``min_height_px`` or ``min_width_px`` (upsampling adds no identity evidence); its
    height/width ratio is off ("aspect") outside ``[min_aspect, max_aspect]`` (a standing person is about 2-3;
    wide boxes are half-visible people or two people merged); "edge" when it comes within ``edge_margin_px``
    of the frame border (the person is probably cut); "blur" when the variance of the Laplacian, measured after
    resizing the crop to ``blur_height_px`` rows so the measure does not depend on the person's size, is under
    ``blur_min``. ``good_height_px`` is the height from which size no longer raises the score.
    """

    min_height_px: int = 64
    min_width_px: int = 16
    min_aspect: float = 1.2
    max_aspect: float = 5.0
    edge_margin_px: int = 2
    blur_min: float = 50.0
    blur_height_px: int = 128
    good_height_px: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.min_aspect < self.max_aspect:
            raise ValueError(f"need 0 < min_aspect < max_aspect, got {self.min_aspect}, {self.max_aspect}")
        if self.min_height_px < 1 or self.min_width_px < 1 or self.blur_height_px < 8 or self.good_height_px < 1:
            raise ValueError("min_height_px, min_width_px, good_height_px must be >= 1 and blur_height_px >= 8")
        if self.edge_margin_px < 0 or self.blur_min < 0:
            raise ValueError("edge_margin_px and blur_min must be >= 0")


@dataclass(frozen=True)
class CropQuality:
    """``score`` in [0, 1] (higher is better, for ranking a track's crops) and the failed checks, by name."""

    score: float
    verdicts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.verdicts


def laplacian_variance(crop: np.ndarray, height_px: int = 128) -> float:
    """Sharpness of a BGR or grey crop: variance of the Laplacian, taller crops first shrunk to ``height_px``.

    Shrinking makes big and small people comparable; small crops are not enlarged, since interpolation would
    smooth them and call them blurred when they are merely small (the "small" verdict covers that).
    """
    if crop.size == 0 or crop.shape[0] < 2 or crop.shape[1] < 2:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    h, w = grey.shape[:2]
    if h > height_px:
        grey = cv2.resize(grey, (max(2, round(w * height_px / h)), height_px), interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    return float(std[0, 0]) ** 2


def assess_quality(
    frame: np.ndarray,
    xyxy: np.ndarray,
    conf: np.ndarray | None = None,
    config: QualityConfig | None = None,
) -> list[CropQuality]:
    """Verdicts and score for each box (unclamped, as detected) in ``frame``.

    The score multiplies one factor per check: size (height / ``good_height_px``, at most 1), aspect
    (1 inside the range, falling off with the log-distance outside), edge (0.6 times the fraction of the box
    inside the frame), sharpness (Laplacian variance / (2 * ``blur_min``), at most 1) and, when given,
    detector confidence (0.5 + conf / 2). It ranks crops; the verdicts are what a consumer should filter on.
    """
    cfg = config or QualityConfig()
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    fh, fw = frame.shape[:2]
    clamped = clamp_boxes(boxes, frame.shape)
    crops = crop_views(frame, clamped)
    out = []
    for i, (box, cbox, crop) in enumerate(zip(boxes.tolist(), clamped.tolist(), crops, strict=True)):
        verdicts = []
        w = cbox[2] - cbox[0]
        h = cbox[3] - cbox[1]
        if crop.size == 0 or h < cfg.min_height_px or w < cfg.min_width_px:
            verdicts.append("small")
        aspect_factor = 0.0
        if h > 0 and w > 0:
            ratio = h / w
            bound = min(max(ratio, cfg.min_aspect), cfg.max_aspect)
            aspect_factor = math.exp(-2.0 * abs(math.log(ratio / bound)))
            if ratio != bound:
                verdicts.append("aspect")
        m = cfg.edge_margin_px
        edge = bool(box[0] < m or box[1] < m or box[2] > fw - m or box[3] > fh - m)
        edge_factor = 1.0
        if edge:
            verdicts.append("edge")
            area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
            edge_factor = 0.6 * min(1.0, w * h / area)
        sharp = laplacian_variance(crop, cfg.blur_height_px)
        if sharp < cfg.blur_min:
            verdicts.append("blur")
        sharp_factor = min(1.0, sharp / (2.0 * cfg.blur_min)) if cfg.blur_min > 0 else 1.0
        size_factor = min(1.0, h / cfg.good_height_px)
        score = size_factor * aspect_factor * edge_factor * sharp_factor
        if conf is not None:
            score *= 0.5 + 0.5 * min(max(float(conf[i]), 0.0), 1.0)
        out.append(CropQuality(min(max(score, 0.0), 1.0), tuple(verdicts)))
    return out
