"""Fit a camera's image-to-ground homography from point pairs: ``(u, v)`` image pixels and ``(x, y)`` ground
positions (metres, or any unit shared by all the site's cameras).

Shared by ``python -m pipeline.calibrate`` (a CSV of ``u,v,x,y`` rows) and the service's calibration page. Why a
module of our own around OpenCV's fit: the fit itself is ``cv2.findHomography``, but a user's clicked points fail in
ways the solver does not report (too few, two clicks on one spot, points on one line, a point off the floor beyond
the horizon), and each must be named by its row before any matrix is written.

The homography is fitted ground -> image, so RANSAC's threshold is in image pixels (a click's error is a few pixels
whatever the ground units), then inverted. With exactly four points the fit is exact and its errors are zero: the
reprojection error says something only from five points on, and an outlier can only be found from six (with five,
any four fit exactly).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reid.identity.geometry import CalibrationError, Homography

MIN_POINTS = 4
DEFAULT_RANSAC_PX = 5.0


class PointsError(ValueError):
    """Point pairs that cannot give a homography; the message names the rows."""


@dataclass(frozen=True)
class PointPair:
    """One correspondence: image pixel (u, v) and ground position (x, y); ``row`` names it in errors (a CSV line
    number, or the page's point number)."""

    u: float
    v: float
    x: float
    y: float
    row: int


@dataclass(frozen=True)
class Fit:
    """A fitted homography and how well each point agrees with it."""

    matrix: np.ndarray  # 3x3, image -> ground, scaled so that its largest entry is 1
    points: list[PointPair]
    ground_error: np.ndarray  # per point, ground units: |H(u, v) - (x, y)|
    image_error: np.ndarray  # per point, pixels: |H^-1(x, y) - (u, v)|
    inliers: np.ndarray  # bool per point: used by the final fit

    @property
    def homography(self) -> Homography:
        return Homography(self.matrix)

    @property
    def outlier_rows(self) -> list[int]:
        return [p.row for p, ok in zip(self.points, self.inliers, strict=True) if not ok]

    def summary(self) -> dict[str, float]:
        g, i = self.ground_error[self.inliers], self.image_error[self.inliers]
        return {"points": len(self.points), "inliers": int(self.inliers.sum()),
                "ground_error_mean": float(g.mean()), "ground_error_max": float(g.max()),
                "image_error_mean_px": float(i.mean()), "image_error_max_px": float(i.max())}

    def to_text(self, note: str = "") -> str:
        """The matrix as the three-row text file ``homography:`` reads (``#`` lines are comments)."""
        out = io.StringIO()
        s = self.summary()
        out.write("# image (u, v) pixels -> ground (x, y): g = H @ [u, v, 1]; g = g[:2] / g[2]\n")
        out.write(f"# fitted from {s['inliers']} of {s['points']} point pairs; mean reprojection error "
                  f"{s['image_error_mean_px']:.2f} px, {s['ground_error_mean']:.4g} ground units\n")
        if note:
            out.write(f"# {note}\n")
        np.savetxt(out, self.matrix, fmt="%.10g")
        return out.getvalue()


def read_points_csv(path: Path) -> list[PointPair]:
    """Rows ``u,v,x,y`` (a header line naming them is allowed; blank lines and ``#`` comments are skipped)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise PointsError(f"{path}: cannot read ({e.strerror or e})") from None
    pairs: list[PointPair] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if [c.lower() for c in cells[:4]] == ["u", "v", "x", "y"]:
            continue
        if len(cells) != 4:
            raise PointsError(f"{path}:{line_no}: expected 4 values u,v,x,y, got {len(cells)}: {','.join(row)}")
        try:
            u, v, x, y = (float(c) for c in cells)
        except ValueError:
            raise PointsError(f"{path}:{line_no}: not a number in {','.join(row)}") from None
        if not all(math.isfinite(c) for c in (u, v, x, y)):
            raise PointsError(f"{path}:{line_no}: not a finite number in {','.join(row)}")
        pairs.append(PointPair(u, v, x, y, line_no))
    return pairs


def _rows(points: Iterable[PointPair]) -> str:
    return ", ".join(str(p.row) for p in points)


def _spread(xy: np.ndarray) -> tuple[float, float]:
    """The largest and smallest singular values of centred points: the second near zero means one line."""
    s = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False)
    return float(s[0]), float(s[-1]) if len(s) > 1 else 0.0


def _collinear(xy: np.ndarray, rel: float = 1e-3) -> bool:
    big, small = _spread(xy)
    return big == 0 or small <= rel * big


def check_points(points: Sequence[PointPair], what: str = "rows") -> None:
    """Refuse input no homography can come from, naming the offending ``what`` (rows, points)."""
    if len(points) < MIN_POINTS:
        raise PointsError(f"{len(points)} point pairs ({what} {_rows(points) or 'none'}); a homography needs at "
                          f"least {MIN_POINTS}, on the floor, not on one line")
    for side, idx in (("image", (0, 1)), ("ground", (2, 3))):
        seen: dict[tuple[float, float], PointPair] = {}
        for p in points:
            key = tuple(round((p.u, p.v, p.x, p.y)[i], 6) for i in idx)
            if key in seen:
                raise PointsError(f"{what} {seen[key].row} and {p.row} give the same {side} point {key}: each pair "
                                  "must be a different place")
            seen[key] = p
        xy = np.array([[(p.u, p.v, p.x, p.y)[i] for i in idx] for p in points])
        if _collinear(xy):
            raise PointsError(f"the {side} points of {what} {_rows(points)} lie on one line: spread them over the "
                              "floor (a homography needs points off any one line)")
        if len(points) == MIN_POINTS:  # exactly four: no three may be collinear
            for skip in range(MIN_POINTS):
                three = [p for j, p in enumerate(points) if j != skip]
                if _collinear(xy[[j for j in range(MIN_POINTS) if j != skip]]):
                    raise PointsError(f"the {side} points of {what} {_rows(three)} lie on one line: with four "
                                      "points, no three may be in line (add a point, or move one)")


def fit_homography(points: Sequence[PointPair], ransac_px: float = DEFAULT_RANSAC_PX, what: str = "rows") -> Fit:
    """Fit image -> ground; with more than four points, RANSAC (threshold ``ransac_px`` image pixels) leaves out
    points that disagree with the rest. Raises :class:`PointsError` naming the rows of degenerate input."""
    check_points(points, what)
    img = np.array([[p.u, p.v] for p in points], np.float64)
    gnd = np.array([[p.x, p.y] for p in points], np.float64)
    # Normalise the ground coordinates: metres and centimetres must fit equally well (OpenCV's DLT is not
    # invariant to a badly scaled side).
    centre, scale = gnd.mean(axis=0), float(np.sqrt(((gnd - gnd.mean(axis=0)) ** 2).sum(axis=1).mean())) or 1.0
    norm = np.array([[1 / scale, 0, -centre[0] / scale], [0, 1 / scale, -centre[1] / scale], [0, 0, 1]])
    gnd_n = (gnd - centre) / scale
    if len(points) > MIN_POINTS:
        h_gi, mask = cv2.findHomography(gnd_n, img, cv2.RANSAC, ransac_px, maxIters=5000, confidence=0.999)
        inliers = mask.ravel().astype(bool) if mask is not None else np.zeros(len(points), bool)
        if inliers.sum() >= MIN_POINTS:  # refit on the inliers by least squares
            h_gi, _ = cv2.findHomography(gnd_n[inliers], img[inliers], 0)
    else:
        h_gi, _ = cv2.findHomography(gnd_n, img, 0)
        inliers = np.ones(len(points), bool)
    if h_gi is None or inliers.sum() < MIN_POINTS:
        raise PointsError(f"no homography agrees with at least {MIN_POINTS} of {what} {_rows(points)} within "
                          f"{ransac_px:g} px: check that each image point and its ground position are the same place")
    h_gi = h_gi @ norm  # ground (original units) -> image
    try:
        matrix = np.linalg.inv(h_gi)
        homography = Homography(matrix)
    except (np.linalg.LinAlgError, CalibrationError) as e:
        raise PointsError(f"the points of {what} {_rows(points)} give a degenerate homography ({e})") from None
    matrix = homography.matrix
    w = np.c_[img, np.ones(len(img))] @ matrix[2] * homography.ground_sign
    behind = [p for p, wi, ok in zip(points, w, inliers, strict=True) if ok and wi <= 0]
    if behind:
        raise PointsError(f"{what} {_rows(behind)} map beyond the horizon (the fit puts them on the far side of the "
                          "floor's vanishing line): a point off the floor, or a ground position that does not match "
                          "its pixel")
    ground, ok = homography.project(img)
    ground_error = np.where(ok, np.linalg.norm(np.nan_to_num(ground) - gnd, axis=1), np.inf)
    back = np.c_[gnd, np.ones(len(gnd))] @ h_gi.T
    image_error = np.linalg.norm(back[:, :2] / back[:, 2:3] - img, axis=1)
    return Fit(matrix, list(points), ground_error, image_error, inliers)


def ground_extent(homography: Homography, width: int, height: int, far: float = 0.35) -> float:
    """The diagonal of the ground a view covers, from its lower ``1 - far`` part (far rows near the horizon
    stretch without bound): the scale against which a calibration's ground error is judged."""
    us, vs = np.meshgrid(np.linspace(0, width, 9), np.linspace(far * height, height, 9))
    g, ok = homography.project(np.c_[us.ravel(), vs.ravel()])
    g = g[ok]
    if len(g) < 2:
        return float("nan")
    return float(np.linalg.norm(g.max(axis=0) - g.min(axis=0)))


def footprint(homography: Homography, width: int, height: int, max_extent: float | None = None) -> np.ndarray:
    """The ground outline (N, 2) of what a ``width`` x ``height`` view sees: its image border walked round and
    projected, the points beyond the horizon left out. ``max_extent`` caps how far from the view's nearest ground
    point the outline may reach (rows near the horizon project towards infinity)."""
    n = 50
    border = np.concatenate([np.c_[np.linspace(0, width, n), np.full(n, height)],
                             np.c_[np.full(n, width), np.linspace(height, 0, n)],
                             np.c_[np.linspace(width, 0, n), np.zeros(n)],
                             np.c_[np.zeros(n), np.linspace(0, height, n)]])
    g, ok = homography.project(border)
    g = g[ok]
    if max_extent is not None and len(g):
        near = g[np.argmin(np.abs(border[ok, 1] - height))]  # a point of the bottom row: nearest the camera
        d = np.linalg.norm(g - near, axis=1)
        far = d > max_extent
        g[far] = near + (g[far] - near) * (max_extent / d[far])[:, None]
    return g
