"""From measured distributions to the config's values, each with the evidence it rests on.

The rules follow what each value costs when wrong, not one site's figures:

- ``same_place``: a false AGREE merges two people; a missed one splits a person whenever appearance cannot link
  the two views (in a crowd, often: on the crowded terrace1 clip a ``same_place`` at the same person's 95th
  percentile instead of the 99th cost 0.044 MTMC IDF1). So the rule is symmetric: the same person's 99th
  percentile, unless that lets more than 1 % of different people's windows agree (their 1st percentile, measured
  on co-visible tracks of one camera).
- The same-person mode is fitted as a Rayleigh distribution (the distance between two noisy 2-D estimates of one
  point): scale ``sigma`` by maximum likelihood on the mutual-nearest distances below the different-people 5th
  percentile, the fit knowing it sees a truncated sample. Its 99th percentile is 3.03 sigma.
- ``different_place``: a false DISAGREE splits one person for good, whatever the appearance, while a missed one
  only leaves the decision to appearance. So it lies where different people are, not where the same person's
  fitted tail ends: the 10th percentile of different people's distances, and no less than 5 sigma (a window of
  the fitted mode lies beyond with probability 4e-6) or 1.5 x ``same_place`` (an undecided band remains). On
  terrace1, 5 sigma alone (50.8 against the hand-set 75) split one person whose half-hidden feet lay further
  apart than the fitted tail allows: the tail of real feet is heavier than a Rayleigh's.
- ``max_speed``: 3.5 x the site's typical fast pace (the median over tracks of each track's 90th-percentile speed
  over 2 s): people walk at 1.0-1.4 m/s and run at 3-4 m/s, so this admits a jog and refuses a teleport.
- ``ground_offset`` (per camera): two calibrations that each fit their own view well can still disagree by a
  constant shift (terrace1's two views put one person's feet 10 units apart in one direction, as the detector's
  boxes show). The same-person windows show it as the median of their shifts, with a standard error; it is
  suggested for each camera against the first calibrated one (a correction of that camera only) when it is beyond
  3 standard errors and at least a quarter of those windows' median distance (so a calibration that only has
  noise is left alone). The other values are then measured on the corrected positions: they must hold for the
  positions the pipeline will see.
- ``matcher.threshold`` is kept: the check reports how it fares on cross-view pairs of tracks the ground has
  judged, one person (same place) and two people (seen at the same time far apart), and their equal-error point.
  That point is not suggested: measured on both terrace1 clips it cost 0.010 and 0.044 MTMC IDF1 (0.83 and 0.79
  against 0.70), because the matcher compares a track's few best crops at decision time with an identity's best
  prototype, not two tracks' whole-track means, and leans on the ground's vetoes; the threshold belongs to the
  weights (``reid.link_bench`` derives it on labelled data). Co-visible tracks of one view are shown but not
  used: the shared view and light flatter their similarity (on terrace1, two people in one view score higher than
  one person across views).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from pipeline.site_check.evidence import AppearanceEvidence, GroundEvidence, overlap_share, view_offsets

MIN_DIFFERENT = 30  # different-people windows needed to read their low percentiles
MIN_SAME = 15  # same-person candidates needed to fit their mode
MIN_PACES = 5  # tracks with a pace needed for max_speed
MIN_NEGATIVES = 20  # cross-view track pairs of two people needed for the matcher threshold
MIN_POSITIVES = 8  # ... and of one person
RAYLEIGH_P99 = math.sqrt(-2 * math.log(0.01))  # 3.035
SIGMAS_APART = 5.0
PACE_FACTOR = 3.5
MIN_SHARED_WINDOWS = 8  # mutual-nearest windows on a shared floor needed to judge a calibration
# On a shared floor, the feet of the same person from two views meet much closer than a crowd's nearest strangers:
# a median over half of chance's (the same tracks at unrelated moments) says the calibrations do not match. On
# terrace1 the right calibrations give about a third of chance's; in a crowd a calibration off by a metre still
# pairs everyone with a stranger close by, so "how close" alone cannot tell.
CHANCE_RATIO_MAX = 0.5


@dataclass
class Suggestion:
    value: float | None  # None: too little evidence (``why`` says what is missing)
    why: str


@dataclass
class OffsetSuggestion:
    camera: str
    value: tuple[float, float] | None  # the camera's whole ground_offset (configured + measured); None: keep
    correction: np.ndarray  # what the measurement adds to the camera's ground positions
    why: str


@dataclass
class GroundFit:
    """The fitted modes: different people's low percentiles and the same person's Rayleigh scale."""

    different_p1: float
    different_p5: float
    different_p10: float
    sigma: float
    same_n: int


def rayleigh_sigma(d: np.ndarray, cut: float) -> float | None:
    """Maximum-likelihood Rayleigh scale of the distances ``d`` (all below ``cut``) of a sample truncated at
    ``cut``: the root of the log-likelihood's derivative in sigma (Brent's method). None when there is no root:
    the distances crowd towards the cut (mean square at least half the cut's), i.e. no tight mode below it."""
    d = np.asarray(d, np.float64)
    n, ss = len(d), float((d * d).sum())
    if n == 0:
        return None

    def score(s: float) -> float:
        tail = math.exp(-cut * cut / (2 * s * s))
        return -2 * n / s + ss / s**3 + n * tail * (cut * cut / s**3) / (1 - tail)

    lo, hi = 1e-3 * cut, 10 * cut
    if not (score(lo) > 0 > score(hi)):
        return None
    return brentq(score, lo, hi)


def fit_ground(ev: GroundEvidence) -> tuple[GroundFit | None, str]:
    if len(ev.different) < MIN_DIFFERENT:
        return None, (f"{len(ev.different)} windows of co-visible tracks in one camera (need {MIN_DIFFERENT}): too "
                      "few people at once to measure how close different people stand; replay more video")
    p1, p5, p10 = (float(np.percentile(ev.different, q)) for q in (1, 5, 10))
    same = ev.same_candidates
    same = same[same < p5]
    if len(same) < MIN_SAME:
        return None, (f"{len(same)} windows in which two calibrated views' tracks stood closer than different "
                      f"people do ({p5:.3g}); need {MIN_SAME}: do the views overlap, and are their calibrations right?")
    sigma = rayleigh_sigma(same, p5)
    if sigma is None:
        return None, (f"the {len(same)} closest cross-view windows crowd towards {p5:.3g} (different people's 5th "
                      "percentile) instead of forming a tight mode: are the calibrations right?")
    return GroundFit(p1, p5, p10, sigma, len(same)), ""


def suggest_offsets(ground: GroundEvidence, configured: Mapping[str, tuple[float, float] | None]
                    ) -> dict[str, OffsetSuggestion]:
    """Each calibrated camera's ``ground_offset`` against the first calibrated camera in sort order of the ids
    (``configured``: the offsets the recordings were replayed with, to which the measured correction adds). A
    camera that shares no floor with that one gets no row. One pass: a shift close to different people's spacing
    is underestimated (the windows beyond it are cut), and a second check with the suggested offset configured
    measures the rest."""
    if len(ground.different) < MIN_DIFFERENT:
        return {}
    below = float(np.percentile(ground.different, 5))
    offsets = view_offsets(ground, below)
    if not offsets:
        return {}
    reference = min(o.a for o in offsets)
    out = {}
    for o in offsets:
        if o.a != reference:
            continue
        correction = -o.shift
        size, err, typical = float(np.linalg.norm(o.shift)), float(np.linalg.norm(o.stderr)), o.distance
        base = np.asarray(configured.get(o.b) or (0.0, 0.0), np.float64)
        seen = (f"{o.b}'s feet lie ({o.shift[0]:+.3g}, {o.shift[1]:+.3g}) from {o.a}'s, +- {err:.2g} (median of "
                f"{o.n} same-person windows, whose median distance is {typical:.3g})")
        if o.n < MIN_SHARED_WINDOWS or size <= 3 * err or size < 0.25 * typical:
            why = "keep: " + seen + (f"; need {MIN_SHARED_WINDOWS} windows" if o.n < MIN_SHARED_WINDOWS else
                                     ": within the noise")
            out[o.b] = OffsetSuggestion(o.b, None, np.zeros(2), why)
            continue
        total = base + correction
        out[o.b] = OffsetSuggestion(o.b, (float(total[0]), float(total[1])), correction,
                                    seen + f": move {o.b}'s ground by ({correction[0]:+.3g}, {correction[1]:+.3g})")
    return out


def suggest_geometry(ev: GroundEvidence, fit: GroundFit | None, missing: str) -> dict[str, Suggestion]:
    """``fit`` and ``missing``: :func:`fit_ground`'s answer."""
    out: dict[str, Suggestion] = {}
    if fit is None:
        out["same_place"] = out["different_place"] = Suggestion(None, missing)
    else:
        p99 = RAYLEIGH_P99 * fit.sigma
        same_place = min(fit.different_p1, p99)
        out["same_place"] = Suggestion(
            same_place, f"min(different people's 1st percentile {fit.different_p1:.3g}, the same person's 99th "
                        f"percentile {p99:.3g} = 3.03 x sigma {fit.sigma:.3g}, fitted on {fit.same_n} windows)")
        different_place = max(fit.different_p10, SIGMAS_APART * fit.sigma, 1.5 * same_place)
        out["different_place"] = Suggestion(
            different_place, f"max(different people's 10th percentile {fit.different_p10:.3g}, {SIGMAS_APART:g} x "
                             f"sigma = {SIGMAS_APART * fit.sigma:.3g}, 1.5 x same_place = {1.5 * same_place:.3g})")
    if len(ev.paces) < MIN_PACES:
        out["max_speed"] = Suggestion(None, f"{len(ev.paces)} tracks long enough to measure a pace (need "
                                            f"{MIN_PACES}): replay more video")
    else:
        pace = float(np.median(ev.paces))
        out["max_speed"] = Suggestion(PACE_FACTOR * pace, f"{PACE_FACTOR:g} x the typical fast pace {pace:.3g}/s "
                                                          f"(median over {len(ev.paces)} tracks)")
    return out


def equal_error(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The similarity at which as many one-person pairs fall below as two-people pairs reach it."""
    cands = np.unique(np.r_[positives, negatives])
    miss = np.array([(positives < t).mean() for t in cands])
    false = np.array([(negatives >= t).mean() for t in cands])
    return float(cands[np.argmin(np.abs(miss - false))])


def suggest_threshold(ev: AppearanceEvidence, configured: float) -> Suggestion:
    """Keep the configured threshold, and say how it fares on this site's ground-judged cross-view pairs (with their
    equal-error point, reported, not suggested: see the module docstring)."""
    pos, neg = ev.cross_same_place, ev.cross_apart
    if len(pos) < MIN_POSITIVES or len(neg) < MIN_NEGATIVES:
        return Suggestion(configured, f"keep: {len(pos)} cross-view track pairs the ground says are one person and "
                                      f"{len(neg)} it says are two (need {MIN_POSITIVES} and {MIN_NEGATIVES} to say "
                                      "more)")
    return Suggestion(configured, f"keep (a property of the weights): it passes "
                                  f"{100 * float((pos >= configured).mean()):.0f} % of {len(pos)} one-person and "
                                  f"{100 * float((neg >= configured).mean()):.0f} % of {len(neg)} two-people "
                                  f"cross-view track pairs (the ground's verdicts; equal error at "
                                  f"{equal_error(pos, neg):.2f})")


def calibration_warnings(ground: GroundEvidence, fit: GroundFit | None,
                         appearance: AppearanceEvidence | None) -> list[str]:
    """What looks wrong: overlapping views whose co-visible tracks' feet meet no closer than by chance; views whose
    seen floor does
    not overlap although people are in both at the same time who look as alike as one track's two halves (mutual
    best matches above the halves' 5th percentile)."""
    out = []
    enough = len(ground.different) >= MIN_DIFFERENT
    alike_at = None
    if appearance is not None and len(appearance.same_track) >= MIN_POSITIVES:
        alike_at = float(np.percentile(appearance.same_track, 5))
    regions = ground.regions
    for pair in ground.pairs:
        a, b = pair.cameras
        ra, rb = regions.get(a), regions.get(b)
        if ra is None or rb is None:
            continue
        shared = overlap_share(ra, rb)
        nearest = np.array([w.distance for w in ground.shared_floor(pair)])
        chance = np.array([w.distance for w in ground.chance_floor(pair)])
        if shared >= 0.1 and min(len(nearest), len(chance)) >= MIN_SHARED_WINDOWS:
            real, luck = float(np.median(nearest)), float(np.median(chance))
            if real > CHANCE_RATIO_MAX * luck:
                out.append(f"{a} and {b} see a common floor ({100 * shared:.0f} % of the smaller view's) but on it "
                           f"their co-visible tracks' feet meet no closer than people's at unrelated moments do "
                           f"(median {real:.3g} against {luck:.3g} by chance): check both calibrations")
        if shared < 0.05 and alike_at is not None and appearance is not None:
            alike = sum(s >= alike_at for s in appearance.mutual_best((a, b)))
            if alike >= 3:
                out.append(f"{a} and {b}'s calibrated floors do not overlap ({100 * shared:.0f} %), yet {alike} pairs "
                           f"of their tracks seen at the same time look as alike as one track's two halves "
                           f"(similarity >= {alike_at:.2f}): if the views overlap, their calibrations disagree")
    if not out and fit is None and ground.pairs and enough:
        out.append("no calibrated pair of views has tracks standing together: either the views do not overlap, or "
                   "the calibrations do not share one ground frame")
    return out
