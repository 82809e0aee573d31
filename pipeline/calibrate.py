"""Fit a camera's image-to-ground homography from a CSV of point pairs, and say how well it fits.

    python -m pipeline.calibrate --points FILE.csv --out H.txt [--ransac-px 5] [--image FRAME_OR_VIDEO]

Each CSV row is ``u,v,x,y``: a pixel of the camera's image (a spot on the floor: a tile corner, a mark) and where
that spot is on the ground (metres, or any unit shared by all the site's cameras). A ``u,v,x,y`` header, blank
lines and ``#`` comments are allowed. At least four rows, spread over the floor with no three in line; from six on,
a row that disagrees with the rest by more than ``--ransac-px`` image pixels is left out and named (with four, the
fit passes through each point and its errors say nothing: add points to check it).

Prints one line per row (its error on the ground and in the image, whether the fit used it) and the mean and max
errors; with ``--image`` (a frame of the camera, or a video whose first frame is read) also the ground extent the
view covers and the mean error as a share of it. Writes the matrix to ``--out`` and prints the config line to paste.
Input no homography can come from (too few rows, duplicates, points in line, a point beyond the horizon, a bad CSV
line) exits with 2 and one line on stderr naming the rows; no matrix is written then.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
from rich import box
from rich.console import Console
from rich.table import Table

from pipeline.calibration import DEFAULT_RANSAC_PX, Fit, PointsError, fit_homography, ground_extent, read_points_csv
from reid.log import setup_logging
from reid.paths import IMAGE_SUFFIXES


class InputError(ValueError):
    """An input file the command cannot use; the message names it."""


def positive(text: str) -> float:
    """A threshold of zero or less would leave out every point: refused by argparse, with its usage line."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--points", type=Path, required=True,
                   help="CSV of u,v,x,y rows: image pixel, ground position (metres: then set geometry.units: m)")
    p.add_argument("--out", type=Path, required=True, help="where to write the 3x3 matrix (folders are created)")
    p.add_argument("--ransac-px", type=positive, default=DEFAULT_RANSAC_PX,
                   help=f"a row further than this many image pixels from the fit of the others is left out "
                        f"(default {DEFAULT_RANSAC_PX:g})")
    p.add_argument("--image", type=Path, default=None, metavar="FRAME_OR_VIDEO",
                   help="a frame of the camera (or a video: its first frame): judge the error against the ground "
                        "the view covers")
    return p.parse_args(argv)


def frame_size(path: Path) -> tuple[int, int]:
    """Width and height of a still image, or of a video's first frame."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        frame = cv2.imread(str(path))
    else:
        cap = cv2.VideoCapture(str(path))
        try:
            frame = cap.read()[1] if cap.isOpened() else None
        finally:
            cap.release()
    if frame is None:
        raise InputError(f"{path}: not a readable image or video")
    return frame.shape[1], frame.shape[0]


def fmt(value: float, spec: str) -> str:
    """A number, or ``-`` where there is none (a point beyond the fit's horizon has no ground error)."""
    return format(value, spec) if math.isfinite(value) else "-"


def point_table(fit: Fit) -> Table:
    """One row per point: where it is, how far the fit puts it from where it should be, whether the fit used it."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("row", "u", "v", "x", "y", "ground err", "image px", "fit"):
        table.add_column(name, justify="left" if name == "fit" else "right", no_wrap=True)
    for p, g, i, used in zip(fit.points, fit.ground_error, fit.image_error, fit.inliers, strict=True):
        table.add_row(str(p.row), f"{p.u:.1f}", f"{p.v:.1f}", f"{p.x:.6g}", f"{p.y:.6g}", fmt(g, ".3g"),
                      fmt(i, ".2f"), "inlier" if used else "left out")
    return table


def left_out_lines(fit: Fit) -> list[str]:
    """Which rows the fit left out and by how much they disagree with it."""
    lines = []
    for p, g, i, used in zip(fit.points, fit.ground_error, fit.image_error, fit.inliers, strict=True):
        if not used:
            where = f"{g:.3g} ground units" if math.isfinite(g) else "its pixel beyond the fit's horizon"
            lines.append(f"row {p.row} left out: {fmt(i, '.1f')} px from where the fit of the others puts its ground "
                         f"position ({where})")
    return lines


def report(console: Console, fit: Fit, size: tuple[int, int] | None, image: Path | None) -> None:
    s = fit.summary()
    console.print(point_table(fit))
    console.print(f"fitted on {s['inliers']} of {s['points']} point pairs: ground error mean "
                  f"{s['ground_error_mean']:.4g}, max {s['ground_error_max']:.4g} (ground units); image error mean "
                  f"{s['image_error_mean_px']:.2f} px, max {s['image_error_max_px']:.2f} px")
    for line in left_out_lines(fit):
        console.print(line)
    if s["inliers"] == 4:
        console.print("fitted on four points: the fit passes through each exactly, so these errors say nothing; add "
                      "points (six or more) to check it")
    if size is not None:
        extent = ground_extent(fit.homography, *size)
        console.print(f"view {size[0]}x{size[1]} ({image}): ground extent {extent:.4g} (the diagonal of the ground "
                      f"seen below the top 35 % of the image); mean ground error "
                      f"{100 * s['ground_error_mean'] / extent:.3g} % of it")


def fail(message: str, code: int = 2) -> int:
    """One line on stderr, no traceback: the message names the file and rows."""
    print(message, file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()  # for library messages; the result goes to stdout, refusals to stderr as one line
    try:
        points = read_points_csv(args.points)  # its errors name the file (and line)
    except PointsError as e:
        return fail(str(e))
    try:
        fit = fit_homography(points, args.ransac_px)
    except PointsError as e:
        return fail(f"{args.points}: {e}")
    try:
        size = frame_size(args.image) if args.image is not None else None
    except InputError as e:
        return fail(str(e))
    console = Console(markup=False, highlight=False, soft_wrap=True)
    report(console, fit, size, args.image)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(fit.to_text(note=f"from {args.points}"))
    except OSError as e:
        return fail(f"{args.out}: cannot write ({e.strerror or e})", code=1)
    console.print(f"wrote {args.out}; under the camera in the pipeline YAML (a relative path is read from the "
                  "config's folder; the config also needs a geometry section, docs/geometry.md):")
    console.print(f"    homography: {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
