"""Appearance inside the per-camera tracker: its settings and the similarity scale (the tracker is
``detectors.tracking.AppearanceByteTrack``; this module does not import ultralytics, so the config can use it).

Why: in crowds the motion-only trackers swap people at crossings (two boxes overlap, both Kalman predictions fit
both detections). Within one camera, seconds apart, the embedding tells people apart far better than across
views: on the crowded terrace1 clip the same person's next detection scores cosine 0.95 (median; p10 0.88)
against the track, two people in the same frame 0.62 (median; p90 0.76). Mixing that into ByteTrack's IoU cost
raised the tracker-alone IDF1 from 0.48 / 0.45 to 0.60 / 0.60 there (benchmarks/mtmc_accuracy.py).

Why not BoT-SORT's ReID: it takes the *minimum* of the IoU and appearance costs, so appearance can only make a
match easier, never veto a wrong one - the swap at a crossing is exactly a good-IoU, wrong-appearance match.
Here the cost is ``(1 - weight) * iou_cost + weight * appearance_cost`` on the pairs IoU allows, with the
appearance cost scaled between the two similarity levels above.

Those levels are the embedding's, not a site's: the tracker measures them itself, without labels, from what it
sees (:class:`SimilarityScale`): a track against its own next clean detection (the same person), and two
detections of one frame (two people). Until enough samples arrive, the priors hold.

The cost is one HA-CNN crop per embedded detection (about 7 ms on these 2 cores), so only the detections whose
association appearance can decide are embedded (``AppearanceByteTrack.wanted``): a detection that overlaps one
track alone, closely enough that it pairs with it whatever either looks like, is paired on IoU, as it would be
with the embedding; every ``refresh_s`` the whole frame is embedded, to keep the tracks' appearance and the scale
current. On the terrace1 clips that leaves out 38 % of the crops (sparse) and 25 % (crowd), with the same
cross-camera IDF1 (docs/crowds.md, session 20).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

CLEAN_IOU = 0.1  # a detection overlapping another one more than this is not used to learn a track's appearance
TWO_PEOPLE_MAX_IOU = 0.3  # two detections of one frame overlapping less than this are two people (NMS leaves 0.7)


class AppearanceConfig(BaseModel):
    """Appearance in the per-camera association (``detector.appearance`` in the pipeline config)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="mix appearance into the association (costs one HA-CNN crop per "
                          "detection it can decide, in the detect stage)")
    weight: float = Field(0.5, gt=0, le=1, description="share of appearance in the association cost of a pair "
                          "whose boxes overlap (the rest: ByteTrack's IoU cost); to leave appearance out, set "
                          "enabled: false")
    smoothing: float = Field(0.9, ge=0, lt=1, description="a track's appearance is this much of the old one plus the "
                             "rest of each new clean detection (no other detection overlapping it)")
    same_prior: float = Field(0.95, gt=-1, le=1, description="typical cosine of one person's next detection, until "
                              "measured (median on terrace1; the tracker then measures its own)")
    different_prior: float = Field(0.62, ge=-1, lt=1, description="typical cosine of two people in one frame, until "
                                   "measured")
    refresh_s: float = Field(1.0, ge=0, le=60, description="besides the detections appearance can decide (at "
                             "crossings, re-finds, new tracks), every detection of a camera is embedded once per "
                             "this many seconds of video, to keep each track's appearance current; 0: every "
                             "detection of every frame (the most crops); 1 s is the crop selector's gap, within "
                             "which a person's crops carry the same information")
    calibration_samples: int = Field(200, ge=10, le=100_000, description="samples of each kind before the measured "
                                     "medians replace the priors; the latest 10x this many are kept")
    weights: Path | None = Field(None, description="HA-CNN weights of the association embedding; unset: reid.weights "
                                 "(the detect stage embeds its own crops, so other weights cost no more)")


    @model_validator(mode="after")
    def _levels_apart(self) -> AppearanceConfig:
        if self.same_prior - self.different_prior < 0.05:
            raise ValueError(f"same_prior ({self.same_prior}) must exceed different_prior ({self.different_prior}) "
                             "by at least 0.05")
        return self


class SimilarityScale:
    """Maps a cosine to an appearance cost in [0, 1]: 0 at the typical same-person level, 1 at the typical
    two-people level, the levels being running medians of what the tracker observes (bounded windows)."""

    def __init__(self, config: AppearanceConfig):
        self.config = config
        keep = 10 * config.calibration_samples
        self.same: deque[float] = deque(maxlen=keep)
        self.different: deque[float] = deque(maxlen=keep)
        self._levels = (config.same_prior, config.different_prior)
        self._since_update = 0

    def observe(self, same: np.ndarray, different: np.ndarray) -> None:
        self.same.extend(np.asarray(same, dtype=np.float64).ravel().tolist())
        self.different.extend(np.asarray(different, dtype=np.float64).ravel().tolist())
        self._since_update += 1
        if self._since_update >= 25:  # medians of a few thousand floats: not at every frame
            self._since_update = 0
            self._levels = self._measured()

    def _measured(self) -> tuple[float, float]:
        n = self.config.calibration_samples
        hi = float(np.median(self.same)) if len(self.same) >= n else self.config.same_prior
        lo = float(np.median(self.different)) if len(self.different) >= n else self.config.different_prior
        if hi - lo < 0.05:  # an embedding that does not separate people here: keep the priors' spread
            return self.config.same_prior, self.config.different_prior
        return hi, lo

    @property
    def levels(self) -> tuple[float, float]:
        """(same-person, two-people) typical cosines in use."""
        return self._levels

    def cost(self, cosine: np.ndarray) -> np.ndarray:
        hi, lo = self._levels
        return np.clip((hi - np.asarray(cosine)) / (hi - lo), 0.0, 1.0)


