"""The evidence behind the suggestions, as one PNG of three panels (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.site_check.evidence import AppearanceEvidence, GroundEvidence
from pipeline.site_check.suggest import GroundFit, Suggestion


def _hist(ax, data: np.ndarray, bins: np.ndarray, label: str, colour: str) -> None:  # noqa: ANN001
    if len(data):
        ax.hist(data, bins=bins, density=True, alpha=0.45, color=colour, label=f"{label} (n={len(data)})")


def _vline(ax, s: Suggestion | None, name: str, colour: str) -> None:  # noqa: ANN001
    if s is not None and s.value is not None:
        ax.axvline(s.value, color=colour, lw=2, ls="--", label=f"{name} = {s.value:.3g}")


def write_plots(path: Path, ground: GroundEvidence, fit: GroundFit | None, suggestions: dict[str, Suggestion],
                appearance: AppearanceEvidence | None, unit: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    nearest = ground.same_candidates
    top = float(np.percentile(np.r_[nearest, ground.different], 95)) if len(nearest) + len(ground.different) else 1
    bins = np.linspace(0, max(top, 1e-6), 40)
    _hist(ax, nearest, bins, "two views, mutual nearest", "tab:blue")
    _hist(ax, ground.different, bins, "one view, co-visible: two people", "tab:orange")
    if fit is not None:
        d = np.linspace(0, bins[-1], 200)
        s = fit.sigma
        share = fit.same_n / max(len(nearest), 1)  # the mode's share of the mutual-nearest histogram
        ax.plot(d, share * d / s**2 * np.exp(-d * d / (2 * s * s)), color="tab:blue", lw=2,
                label=f"same person (Rayleigh fit, sigma {s:.3g})")
    _vline(ax, suggestions.get("same_place"), "same_place", "green")
    _vline(ax, suggestions.get("different_place"), "different_place", "red")
    ax.set(title="feet of co-visible tracks on the ground (2-s medians)", xlabel=f"distance ({unit})",
           ylabel="density")
    ax.legend(fontsize=8)

    ax = axes[1]
    if len(ground.paces):
        ax.hist(ground.paces, bins=20, color="tab:purple", alpha=0.6, label=f"tracks (n={len(ground.paces)})")
    _vline(ax, suggestions.get("max_speed"), "max_speed", "red")
    ax.set(title="each track's fast pace (90th percentile over 2 s)", xlabel=f"speed ({unit}/s)", ylabel="tracks")
    ax.legend(fontsize=8)

    ax = axes[2]
    if appearance is not None:
        bins = np.linspace(0.3, 1, 36)  # below 0.3 no two crops of people meet
        _hist(ax, appearance.cross_apart, bins, "two views, apart: two people", "tab:red")
        _hist(ax, appearance.different, bins, "one view, co-visible: two people", "tab:orange")
        _hist(ax, appearance.cross_same_place, bins, "two views, same place: one person", "tab:blue")
        _hist(ax, appearance.same_track, bins, "one track's two halves", "tab:green")
        _vline(ax, suggestions.get("threshold"), "matcher.threshold", "red")
    ax.set(title="appearance: track similarity (cosine)", xlabel="similarity", ylabel="density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
