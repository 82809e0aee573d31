"""How well ``python -m pipeline.calibrate`` recovers a camera's homography from a handful of clicked point pairs.

    python benchmarks/calibration_accuracy.py [--repeats 50] [--seed 0]

For both views of EPFL terrace1, point pairs are made with the shipped homography: pixels spread over the lower
part of the real frame, their ground positions projected. The pixels then get Gaussian click noise (sigma in px;
the ground positions stay exact: a tape measure is better than a click) and :func:`pipeline.calibration.
fit_homography` fits them, as the CLI does. Rows: six points at 0 (the reference: the fit itself is exact), 0.5, 1
and 2 px of noise; ten points at 1 px; eight points at 1 px of which one (a random row, in a random direction) is
40 px off.

Judged where a homography is used, on a 19 x 14 grid of floor pixels (the lower 65 % of the frame, the part
``ground_extent`` measures): per fit the mean and 95th percentile of the distance between the fitted and the true
ground position (in the dataset's ground units, and as % of the view's ground extent), and the mean image
reprojection error of the points the fit kept. One table; each cell is the median over ``--repeats`` seeded draws.
``left out``: rows the fit left out, mean per fit; ``caught``: draws in which exactly the 40-px row was left out;
``failed``: draws refused with an error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.calibration import PointPair, PointsError, fit_homography, ground_extent  # noqa: E402
from reid.identity.geometry import Homography  # noqa: E402
from reid.paths import shared_root  # noqa: E402

# Pixels as fractions of the frame (u, v): three across the far floor, three across the near floor, then the middle.
SIX = [(0.1, 0.45), (0.5, 0.4), (0.9, 0.45), (0.15, 0.92), (0.5, 0.95), (0.85, 0.92)]
EIGHT = SIX + [(0.3, 0.65), (0.7, 0.7)]
TEN = EIGHT + [(0.05, 0.7), (0.95, 0.65)]
FAR = 0.35  # the grid starts this far down the frame, as ground_extent does
OUTLIER_PX = 40.0
# (label, layout, noise px, with a 40-px outlier)
CASES = [("6 points", SIX, 0.0, False), ("6 points", SIX, 0.5, False), ("6 points", SIX, 1.0, False),
         ("6 points", SIX, 2.0, False), ("10 points", TEN, 1.0, False), ("8 pts, one 40 px off", EIGHT, 1.0, True)]


def frame_size(video: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"{video}: cannot read a frame")
    return frame.shape[1], frame.shape[0]


def floor_grid(width: int, height: int) -> np.ndarray:
    us, vs = np.meshgrid(np.linspace(0, width, 19), np.linspace(FAR * height, height, 14))
    return np.c_[us.ravel(), vs.ravel()]


def one_fit(truth: Homography, px: np.ndarray, ground: np.ndarray, grid: np.ndarray, noise: float, outlier: bool,
            rng: np.random.Generator) -> dict[str, float] | None:
    """One draw: noisy pixels (one row pushed 40 px off when ``outlier``) fitted and judged on the floor grid;
    None when the fit refuses the input."""
    noisy = px + rng.normal(0.0, noise, px.shape)
    bad = int(rng.integers(len(px))) if outlier else -1
    if outlier:
        angle = rng.uniform(0, 2 * np.pi)
        noisy[bad] += OUTLIER_PX * np.array([np.cos(angle), np.sin(angle)])
    try:
        fit = fit_homography([PointPair(*noisy[i], *ground[i], i + 1) for i in range(len(px))])
    except PointsError:
        return None
    got, ok = fit.homography.project(grid)
    want, _ = truth.project(grid)
    err = np.where(ok, np.linalg.norm(np.nan_to_num(got) - want, axis=1), np.inf)
    left = ~fit.inliers
    return {"mean": float(err.mean()), "p95": float(np.percentile(err, 95)),
            "image_px": fit.summary()["image_error_mean_px"], "left": float(left.sum()),
            "caught": float(outlier and left.sum() == 1 and left[bad])}


def run_case(truth: Homography, size: tuple[int, int], layout: list[tuple[float, float]], noise: float,
             outlier: bool, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    px = np.array([(a * size[0], b * size[1]) for a, b in layout])
    ground, ok = truth.project(px)
    assert ok.all(), "a layout pixel is beyond the shipped horizon"
    grid = floor_grid(*size)
    draws = [one_fit(truth, px, ground, grid, noise, outlier, rng) for _ in range(repeats)]
    done = [d for d in draws if d is not None]
    out = {k: statistics.median(d[k] for d in done) if done else float("nan") for k in ("mean", "p95", "image_px")}
    out["left"] = statistics.fmean(d["left"] for d in done) if done else float("nan")
    out["caught"] = sum(d["caught"] for d in done)
    out["failed"] = len(draws) - len(done)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/calibration_accuracy.py", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=50, help="seeded draws per row (cells are their median)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    root = shared_root() / "video" / "epfl_terrace1"
    rng = np.random.default_rng(args.seed)
    rows = []
    for cam in ("c0", "c1"):
        truth = Homography.load(root / f"homography-{cam}.txt")
        size = frame_size(root / f"terrace1-{cam}.mp4")
        extent = ground_extent(truth, *size)
        for label, layout, noise, outlier in CASES:
            rows.append((cam, size, extent, label, noise, outlier,
                         run_case(truth, size, layout, noise, outlier, args.repeats, rng)))
    print(f"Homography recovery on EPFL terrace1 from clicked-like point pairs: median over {args.repeats} draws "
          f"(seed {args.seed}) of the floor-grid ground error (dataset units and % of the view's ground extent: the "
          f"diagonal of the ground the lower {1 - FAR:.0%} of the frame covers, under the shipped matrix) and of the "
          "kept points' image error; the 0 px row is the reference")
    print(f"{'cam':<4}{'frame':>8}{'extent':>8}  {'points':<21}{'noise px':>9}{'mean err':>10}{'%':>10}"
          f"{'p95 err':>10}{'%':>10}{'image px':>10}{'left out':>10}{'caught':>8}{'failed':>8}")
    for cam, size, extent, label, noise, outlier, r in rows:
        caught = f"{r['caught']:.0f}/{args.repeats}" if outlier else "-"
        print(f"{cam:<4}{size[0]:>4}x{size[1]:<3}{extent:>8.1f}  {label:<21}{noise:>9.1f}{r['mean']:>10.3g}"
              f"{100 * r['mean'] / extent:>10.3g}{r['p95']:>10.3g}{100 * r['p95'] / extent:>10.3g}"
              f"{r['image_px']:>10.3f}{r['left']:>10.2f}{caught:>8}{r['failed']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
