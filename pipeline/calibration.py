"""Fit a camera's image-to-ground homography from point pairs: ``(u, v)`` image pixels and ``(x, y)`` ground
positions (metres, or any unit shared by all the site's cameras).

Shared by ``python -m pipeline.calibrate`` (a CSV of ``u,v,x,y`` rows) and the service's calibration page. Why a
module of our own around OpenCV's fit: the fit itself is ``cv2.findHomography`` (least squares), but a user's
clicked points fail in ways the solver does not report (too few, two clicks on one spot, points on one line, a point
off the floor beyond the horizon), and each must be named by its row before any matrix is written. Which points to
trust is chosen here too: OpenCV's RANSAC knows nothing of horizons, and with a handful of noisy clicks it drops
good points (see :func:`_robust_fit`).

The homography is fitted ground -> image, so RANSAC's threshold is in image pixels (a click's error is a few pixels
whatever the ground units), then inverted. With exactly four points the fit is exact and its errors are zero: the
reprojection error says something only from five points on, and an outlier can only be found from six (with five,
any four fit exactly: only when the four others are the one set a camera could see is the fifth found, else the
rows in doubt are named).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reid.identity.geometry import CalibrationError, Homography

MIN_POINTS = 4
DEFAULT_RANSAC_PX = 5.0
_REFITS = 5  # least-squares refits after the consensus, each re-judging every point
_MAX_SAMPLES = 5000  # four-point models tried: every one up to 20 points, a seeded random draw beyond


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
        # Four points with no three in line exist unless all but one are in line (with exactly four: three of
        # them). Such input gives a matrix that fits every point exactly and is wrong everywhere else.
        for skip in range(len(points)):
            rest = [j for j in range(len(points)) if j != skip]
            if _collinear(xy[rest]):
                raise PointsError(f"the {side} points of {what} {_rows(points[j] for j in rest)} lie on one line: "
                                  f"a homography needs four points with no three in line (move one, or add one "
                                  f"off that line)")


def _image_distance(h_gi: np.ndarray, gnd: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Pixels between each ground point mapped by ``h_gi`` (ground -> image: one (3, 3) or a stack (K, 3, 3)) and its
    image point: (N,) or (K, N); inf where the ground point maps to infinity."""
    back = np.c_[gnd, np.ones(len(gnd))] @ np.swapaxes(h_gi, -1, -2)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.linalg.norm(back[..., :2] / back[..., 2:3] - img, axis=-1)
    return np.where(np.isfinite(d), d, np.inf)


def _floor_side(h_gi: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Whether each image point is on the floor's side of the horizon of ``h_gi`` (ground -> image, one or a
    stack), the side :class:`Homography` projects (that of pixels far down the image): (N,) or (K, N)."""
    m = np.linalg.inv(h_gi)[..., 2, :]  # image -> ground, its last row: w
    sign = np.where(m[..., 1] != 0, np.sign(m[..., 1]), np.sign(m[..., 2]))
    return (m @ np.c_[img, np.ones(len(img))].T) * sign[..., None] > 0


def _three_in_line(xy: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """Per four points (K, 4, 2): whether three of them are (nearly) in line, twice their triangle's area against
    its longest side squared (such a sample gives no homography)."""
    out = np.zeros(len(xy), bool)
    for a, b, c in itertools.combinations(range(4), 3):
        e1, e2, e3 = xy[:, b] - xy[:, a], xy[:, c] - xy[:, a], xy[:, c] - xy[:, b]
        area2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        longest = np.max([(e * e).sum(axis=1) for e in (e1, e2, e3)], axis=0)
        out |= area2 <= rel * longest
    return out


def _samples(n: int) -> np.ndarray:
    """Four-point samples (K, 4) of ``n`` points: all of them while there are at most :data:`_MAX_SAMPLES`, else a
    seeded random draw (the same input gives the same fit)."""
    if math.comb(n, MIN_POINTS) <= _MAX_SAMPLES:
        return np.array(list(itertools.combinations(range(n), MIN_POINTS)))
    return np.argsort(np.random.default_rng(0).random((_MAX_SAMPLES, n)), axis=1)[:, :MIN_POINTS]


def _four_point_models(gnd: np.ndarray, img: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Ground -> image homographies (K, 3, 3) through each sample's four points exactly: the DLT with h33 = 1, all
    samples in one batched solve (a pseudo-inverse: a singular sample gives a model that fits nothing, no error)."""
    g, p = gnd[samples], img[samples]
    x, y, u, v = g[..., 0], g[..., 1], p[..., 0], p[..., 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    a = np.concatenate([np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=-1),
                        np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=-1)], axis=1)
    h = np.linalg.pinv(a) @ np.concatenate([u, v], axis=1)[..., None]
    return np.concatenate([h[..., 0], np.ones((len(h), 1))], axis=1).reshape(-1, 3, 3)


def _consensus(points: Sequence[PointPair], gnd: np.ndarray, img: np.ndarray, ransac_px: float,
               what: str) -> np.ndarray | None:
    """The points agreeing (within ``ransac_px`` and on the floor's side) with the best four-point model, or None
    when no model is possible. RANSAC, but over every sample while that is cheap (a handful of clicked points), and
    a model that puts one of its own four points beyond its horizon is no camera's and is not counted. Best: the
    most points, then the least truncated squared error (MSAC). When the best agree only in fours and several fours
    do, nothing says which points are wrong: a :class:`PointsError` names the rows in doubt."""
    samples = _samples(len(img))
    samples = samples[~(_three_in_line(gnd[samples]) | _three_in_line(img[samples]))]
    models = _four_point_models(gnd, img, samples)
    models /= np.abs(models).max(axis=(1, 2), keepdims=True)
    keep = np.isfinite(models).all(axis=(1, 2))
    keep[keep] = np.abs(np.linalg.det(models[keep])) > 1e-12
    samples, models = samples[keep], models[keep]
    if not len(models):
        return None
    floor = _floor_side(models, img)
    err = _image_distance(models, gnd, img)
    agree = (err <= ransac_px) & floor & np.take_along_axis(floor, samples, axis=1).all(axis=1)[:, None]
    count = agree.sum(axis=1)
    if count.max() < MIN_POINTS:
        return None
    top = agree[count == count.max()]
    if count.max() == MIN_POINTS and len(np.unique(top, axis=0)) > 1:
        doubt = [p for p, some, every in zip(points, top.any(axis=0), top.all(axis=0), strict=True)
                 if some and not every]
        raise PointsError(f"no {MIN_POINTS + 1} of {what} {_rows(points)} agree within {ransac_px:g} px, and the "
                          f"fours that do differ over {what} {_rows(doubt)}: any four points fit exactly, so which "
                          f"are wrong cannot be told; check {what} {_rows(doubt)} (pixel and ground position the same "
                          "place, on the floor), or add points")
    loss = np.where(agree, err**2, ransac_px**2).sum(axis=1)
    return agree[np.argmin(np.where(count == count.max(), loss, np.inf))]


def _robust_fit(points: Sequence[PointPair], gnd: np.ndarray, img: np.ndarray, ransac_px: float,
                what: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Ground -> image, and which points it was fitted on: all of them by least squares when each agrees with that
    fit within ``ransac_px`` on the floor's side of its horizon; otherwise the :func:`_consensus` points, refitted by
    least squares and every point re-judged against the refit until they settle.

    Why least squares first: a four-point model carries all of its points' click noise, so with six or so points
    and a pixel or two of noise often no such model agrees with all the rest within the threshold, and RANSAC alone
    leaves out good points (or keeps four nearly in line and a wild matrix) although the fit over all agrees with
    every one."""
    everyone = np.ones(len(img), bool)
    h_gi, _ = cv2.findHomography(gnd, img, 0)
    if len(img) == MIN_POINTS:
        return h_gi, everyone
    if h_gi is not None and ((_image_distance(h_gi, gnd, img) <= ransac_px) & _floor_side(h_gi, img)).all():
        return h_gi, everyone
    inliers = _consensus(points, gnd, img, ransac_px, what)
    if inliers is None:
        return None, ~everyone
    for _ in range(_REFITS):
        h_gi, _ = cv2.findHomography(gnd[inliers], img[inliers], 0)
        if h_gi is None:
            return None, inliers
        again = (_image_distance(h_gi, gnd, img) <= ransac_px) & _floor_side(h_gi, img)
        if again.sum() < MIN_POINTS or (again == inliers).all():
            return h_gi, inliers
        inliers = again
    return cv2.findHomography(gnd[inliers], img[inliers], 0)[0], inliers


def fit_homography(points: Sequence[PointPair], ransac_px: float = DEFAULT_RANSAC_PX, what: str = "rows") -> Fit:
    """Fit image -> ground; with more than four points of which some disagree with the fit over all by more than
    ``ransac_px`` image pixels, those that disagree with the rest are left out (RANSAC). Raises
    :class:`PointsError` naming the rows of degenerate input."""
    check_points(points, what)
    img = np.array([[p.u, p.v] for p in points], np.float64)
    gnd = np.array([[p.x, p.y] for p in points], np.float64)
    # Normalise the ground coordinates: metres and centimetres must fit equally well (the four-point DLT of the
    # RANSAC samples, with h33 = 1, is not invariant to a badly scaled side).
    centre, scale = gnd.mean(axis=0), float(np.sqrt(((gnd - gnd.mean(axis=0)) ** 2).sum(axis=1).mean())) or 1.0
    norm = np.array([[1 / scale, 0, -centre[0] / scale], [0, 1 / scale, -centre[1] / scale], [0, 0, 1]])
    gnd_n = (gnd - centre) / scale
    try:
        h_gi, inliers = _robust_fit(points, gnd_n, img, ransac_px, what)
    except np.linalg.LinAlgError as e:
        raise PointsError(f"the points of {what} {_rows(points)} give a degenerate homography ({e})") from None
    if h_gi is None or inliers.sum() < MIN_POINTS:
        raise PointsError(f"no homography agrees with at least {MIN_POINTS} of {what} {_rows(points)} within "
                          f"{ransac_px:g} px with them all on the floor: check that each image point and its ground "
                          "position are the same place")
    h_gi = h_gi @ norm  # ground (original units) -> image
    try:
        matrix = np.linalg.inv(h_gi)
        homography = Homography(matrix)
    except (np.linalg.LinAlgError, CalibrationError) as e:
        raise PointsError(f"the points of {what} {_rows(points)} give a degenerate homography ({e})") from None
    matrix = homography.matrix
    w = np.c_[img, np.ones(len(img))] @ matrix[2] * homography.ground_sign
    behind = [p for p, wi, ok in zip(points, w, inliers, strict=True) if ok and wi <= 0]
    if behind and len(points) == MIN_POINTS:
        raise PointsError(f"{what} {_rows(behind)} map beyond the horizon of the one homography through {what} "
                          f"{_rows(points)}: one of these four pairs is off the floor, or its ground position does not "
                          "match its pixel, and with four points (each fitted exactly) which one cannot be told; "
                          "check them, or add points")
    if behind:
        raise PointsError(f"{what} {_rows(behind)} map beyond the horizon (the fit puts them on the far side of the "
                          "floor's vanishing line): a point off the floor, or a ground position that does not match "
                          "its pixel")
    ground, ok = homography.project(img)
    ground_error = np.where(ok, np.linalg.norm(np.nan_to_num(ground) - gnd, axis=1), np.inf)
    image_error = _image_distance(h_gi, gnd, img)
    return Fit(matrix, list(points), ground_error, image_error, inliers)


def floor_samples(homography: Homography, width: int, height: int, far: float = 0.35) -> np.ndarray:
    """Ground positions (N, 2) of a 9 x 9 grid over the view's lower ``1 - far`` part (far rows near the horizon
    stretch without bound), those beyond the horizon left out: the floor a view can be judged on."""
    us, vs = np.meshgrid(np.linspace(0, width, 9), np.linspace(far * height, height, 9))
    g, ok = homography.project(np.c_[us.ravel(), vs.ravel()])
    return g[ok]


def ground_extent(homography: Homography, width: int, height: int, far: float = 0.35) -> float:
    """The diagonal of :func:`floor_samples`: the scale against which a calibration's ground error is judged."""
    g = floor_samples(homography, width, height, far)
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
