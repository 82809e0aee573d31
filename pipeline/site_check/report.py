"""One site check: measure (:mod:`.evidence`), derive (:mod:`.suggest`), and say it as JSON and config lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.site_check.evidence import (
    AppearanceEvidence,
    GroundEvidence,
    appearance_evidence,
    ground_evidence,
    pair_medians,
    shifted,
)
from pipeline.site_check.suggest import (
    GroundFit,
    OffsetSuggestion,
    Suggestion,
    calibration_warnings,
    equal_error,
    fit_ground,
    suggest_geometry,
    suggest_offsets,
    suggest_threshold,
)
from reid.adapt.harvest import Recording, embed_tracks, unit

CROPS_PER_TRACK = 12  # embedded per track: its mean is steady by then, and a crowd's replay stays cheap
GEOMETRY_KEYS = ("same_place", "different_place", "max_speed")


def track_embeddings(recordings: Sequence[Recording], embedder) -> tuple[dict, dict]:  # noqa: ANN001 - an Embedder
    """Each track's unit mean embedding of at most ``CROPS_PER_TRACK`` clean crops, and the means of its two
    halves (tracks with four crops or more)."""
    embs = embed_tracks(recordings, embedder, CROPS_PER_TRACK)
    means = {k: unit(e.mean(axis=0)) for k, e in embs.items()}
    halves = {k: (e[: len(e) // 2].mean(axis=0), e[len(e) // 2 :].mean(axis=0)) for k, e in embs.items() if len(e) >= 4}
    return means, halves


@dataclass
class SiteCheck:
    ground: GroundEvidence
    fit: GroundFit | None
    appearance: AppearanceEvidence
    suggestions: dict[str, Suggestion]  # same_place, different_place, max_speed, threshold
    warnings: list[str]
    offsets: dict[str, OffsetSuggestion]  # per camera: its ground_offset against the first calibrated camera

    def config_lines(self, units: str | None = None) -> str:
        """The geometry section to paste in place of the config's: the suggested values that could be measured,
        and the config's ``units`` kept (a second ``geometry:`` key is refused when the config loads); then, where
        one is suggested, each camera's ``ground_offset``, to add to that camera's entry (YAML, like the rest)."""
        geo = [f"  {k}: {sig(self.suggestions[k].value)}" for k in GEOMETRY_KEYS
               if self.suggestions[k].value is not None]
        lines = ["geometry:", *([f"  units: {units}"] if units else []), *geo] if geo else []
        moved = [(cam, o.value) for cam, o in sorted(self.offsets.items()) if o.value is not None]
        if moved:
            lines.append("cameras:  # add ground_offset to these cameras' entries; keep the rest of each entry")
        for cam, (dx, dy) in moved:
            lines += [f"  - id: {cam}", f"    ground_offset: [{sig(dx)}, {sig(dy)}]"]
        return "\n".join(lines)

    def evidence_summary(self) -> dict:
        g, a = self.ground, self.appearance
        enough = len(a.cross_same_place) and len(a.cross_apart)
        return {"ground": {"one_view_co_visible": _pct(g.different, (1, 5, 50)),
                           "two_views_mutual_nearest": _pct(g.same_candidates, (25, 50, 75)),
                           "track_paces": _pct(g.paces, (10, 50, 90))},
                "appearance": {"one_view_co_visible": _pct(a.different, (50, 95, 99)),
                               "two_views_apart": _pct(a.cross_apart, (50, 95, 99)),
                               "two_views_same_place": _pct(a.cross_same_place, (5, 25, 50)),
                               "same_track_halves": _pct(a.same_track, (5, 50)),
                               "cross_view_equal_error": sig(equal_error(a.cross_same_place, a.cross_apart))
                               if enough else None}}


def sig(x: float) -> float:
    """Three significant digits: a threshold, not a measurement's noise."""
    return float(f"{x:.3g}")


def _pct(x: np.ndarray, qs: Sequence[int]) -> dict[str, float]:
    if not len(x):
        return {"n": 0}
    return {f"p{q}": sig(float(np.percentile(x, q))) for q in qs} | {"n": len(x)}


def check(recordings: Sequence[Recording], embedder, threshold: float,  # noqa: ANN001 - an Embedder
          offsets_now: Mapping[str, tuple[float, float] | None] | None = None) -> SiteCheck:
    """Measure and suggest from harvested recordings (``reid.adapt.harvest``); reads no ground truth.
    ``threshold``: the configured ``matcher.threshold``, judged on the site's pairs; ``offsets_now``: the cameras'
    configured ``ground_offset`` (the recordings' ground positions include them). Where a camera's offset is
    suggested, the ground rules are measured on the positions it corrects."""
    ground = ground_evidence(recordings)
    offsets = suggest_offsets(ground, offsets_now or {})
    moves = {c: o.correction for c, o in offsets.items() if o.value is not None}
    if moves:
        recordings = shifted(recordings, moves)
        ground = ground_evidence(recordings)
    fit, missing = fit_ground(ground)
    suggestions = suggest_geometry(ground, fit, missing)
    means, halves = track_embeddings(recordings, embedder)
    appearance = appearance_evidence(recordings, means, halves, pair_medians(ground),
                                     suggestions["same_place"].value, suggestions["different_place"].value)
    suggestions["threshold"] = suggest_threshold(appearance, threshold)
    warnings = calibration_warnings(ground, fit, appearance)
    return SiteCheck(ground, fit, appearance, suggestions, warnings, offsets)
