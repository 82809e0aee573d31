"""Ground-plane geometry: where a person stands, and what two tracks' positions say about being one person.

A calibrated camera has a 3x3 homography from image pixels to a ground plane shared by all calibrated cameras
(free units). A track's foot point (its box's bottom centre) projects to the ground, and two tracks compare:

- seen at the same time (in overlapping views): the median distance between their ground positions over the
  moments both are seen. Within ``same_place`` it is strong evidence of one person; beyond ``different_place``
  they are two people, whatever their appearance (two views that do not overlap never see the same person at the
  same time, so they land far apart and are kept apart: no overlap list is needed);
- one after the other: the distance from where the first was last seen to where the second was first seen,
  over the gap; faster than ``max_speed`` is impossible for one person.

Appearance cannot separate people in similar dark clothes; where they stand nearly always can.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

AGREE = 1  # the two tracks are very likely one person (seen at one place at the same time)
CONTINUES = 2  # the later track is probably the earlier one found again (weaker than AGREE)
DISAGREE = -1  # the two tracks cannot be one person
UNKNOWN = 0
POSITIVE = frozenset({AGREE, CONTINUES})  # verdicts that speak for one person

_MIN_W = 1e-9  # |w| below this: the point is on the horizon line


class CalibrationError(ValueError):
    """A homography that cannot map image points to the ground; the message says what is wrong."""


class Homography:
    """An image-to-ground homography, checked at load time.

    Points on the far side of the horizon line (``w`` of the wrong sign) have no ground position: the sign of
    the ground side is that of points far down the image (large ``v``), where every camera sees the floor.
    """

    def __init__(self, matrix: Any) -> None:
        try:
            h = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"homography is not a numeric matrix ({e})") from e
        if h.shape != (3, 3):
            raise CalibrationError(f"homography must be a 3x3 matrix, got shape {h.shape}")
        if not np.isfinite(h).all():
            raise CalibrationError("homography holds a non-finite value")
        scale = np.abs(h).max()
        if scale == 0 or abs(np.linalg.det(h / scale)) < 1e-12:
            raise CalibrationError("homography is singular (it maps the image onto a line or a point)")
        self.matrix = h / scale
        ground_sign = np.sign(self.matrix[2, 1]) or np.sign(self.matrix[2, 2])
        if ground_sign == 0:
            raise CalibrationError("homography has no ground side (its last row is zero in v and constant)")
        self.ground_sign = float(ground_sign)
        self._rows = self.matrix.tolist()

    @classmethod
    def load(cls, value: Any, base_dir: Path | None = None) -> Homography:
        """From a 3x3 nested list, or the path of a text file with 3 rows of 3 numbers (relative to ``base_dir``)."""
        if isinstance(value, str | Path):
            path = Path(value).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if not path.is_file():
                raise CalibrationError(f"homography file {path} is missing")
            try:
                value = np.loadtxt(path, dtype=np.float64, ndmin=2)
            except ValueError as e:
                raise CalibrationError(f"homography file {path} is not a 3x3 table of numbers ({e})") from e
        return cls(value)

    def translated(self, dx: float, dy: float) -> Homography:
        """This calibration with ``(dx, dy)`` added to every ground position (a camera's ``ground_offset``)."""
        return Homography(np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]]) @ self.matrix)

    def project_point(self, u: float, v: float) -> tuple[float, float] | None:
        """The ground position of one image point, or None beyond the horizon (:meth:`project` for one point,
        without array overhead: the tracker projects every sighting)."""
        (a, b, c), (d, e, f), (g, h, i) = self._rows
        w = g * u + h * v + i
        if w * self.ground_sign <= _MIN_W:
            return None
        x, y = (a * u + b * v + c) / w, (d * u + e * v + f) / w
        return (x, y) if math.isfinite(x) and math.isfinite(y) else None

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground positions (N, 2) of image points (N, 2), and a mask of those that have one."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        hom = np.c_[pts, np.ones(len(pts))] @ self.matrix.T
        w = hom[:, 2] * self.ground_sign
        valid = w > _MIN_W
        out = np.full((len(pts), 2), np.nan)
        out[valid] = hom[valid, :2] / hom[valid, 2:3]
        valid &= np.isfinite(out).all(axis=1)
        return out, valid


def box_intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, M) intersection areas of xyxy boxes, with the (N,) and (M,) box areas."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter, area(a), area(b)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes."""
    inter, area_a, area_b = box_intersections(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def foot_points(xyxy: np.ndarray) -> np.ndarray:
    """Bottom centres (N, 2) of ``xyxy`` boxes: where a standing person touches the floor."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.c_[(b[:, 0] + b[:, 2]) / 2, b[:, 3]]


UNITS_PER_METRE = {"m": 1.0, "cm": 100.0, "mm": 1000.0}
# Defaults of a calibration in metres (scaled for cm, mm). same_place: one person's feet seen from two calibrated
# views rarely lie further apart than half a shoulder width; different_place: people walking side by side keep
# about this much between their feet; max_speed: a jog (people walk at 1.0-1.4 m/s). A site measures its own with
# ``python -m pipeline.site_check``.
METRE_DEFAULTS = {"same_place": 0.3, "different_place": 0.75, "max_speed": 3.0}
UNIT_SLACK = 5.0  # with units, a value beyond 5x (or under 1/5 of) its default is refused: another unit's (10x, 100x)


class GeometryConfig(BaseModel):
    """Ground-plane rules, in the units of the cameras' homographies (which must share one ground frame).

    With ``units`` (``m``, ``cm`` or ``mm``: a calibration in real units, as the calibration page makes) the
    distances default to :data:`METRE_DEFAULTS` in those units, and any given must be in those units too. Without
    it the units are free (a dataset's own) and each site states its distances, measured as ``docs/geometry.md``
    shows or by ``python -m pipeline.site_check``.
    """

    model_config = {"extra": "forbid"}

    units: Literal["m", "cm", "mm"] | None = Field(
        None, description="the homographies' ground units; gives the distances and speed defaults in those units")
    same_place: float = Field(gt=0, description="median ground distance under which co-visible tracks agree")
    different_place: float = Field(gt=0, description="median ground distance over which they are two people")
    max_speed: float = Field(gt=0, description="fastest plausible walk between two sightings, units per second")
    min_common: int = Field(3, ge=1, description="moments seen together before a distance counts as evidence")
    max_dt_s: float = Field(0.25, gt=0, description="two sightings this close in time count as the same moment")
    history: int = Field(600, ge=8, description="ground positions kept per track (a bounded window)")

    @model_validator(mode="before")
    @classmethod
    def _unit_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("units") in UNITS_PER_METRE:
            scale = UNITS_PER_METRE[data["units"]]
            data = {**{k: v * scale for k, v in METRE_DEFAULTS.items()}, **data}
        return data

    @model_validator(mode="after")
    def _order(self) -> GeometryConfig:
        if self.units is not None:
            scale = UNITS_PER_METRE[self.units]
            for name, default in METRE_DEFAULTS.items():
                value, usual = getattr(self, name), default * scale
                if not usual / UNIT_SLACK <= value <= usual * UNIT_SLACK:  # a value in another unit, most likely
                    raise ValueError(f"{name} {value:g} is not a plausible value in {self.units} (the default is "
                                     f"{usual:g}): give it in the calibration's units, {self.units}")
        if self.different_place <= self.same_place:
            hint = f" (with units: {self.units}, what is not given takes its default)" if self.units else ""
            raise ValueError(f"different_place ({self.different_place:g}) must exceed same_place "
                             f"({self.same_place:g}){hint}")
        return self

    @property
    def unit_name(self) -> str:
        """How to print a distance's unit: ``m``, ``cm``, ``mm``, or ``units`` (a free calibration)."""
        return self.units or "units"


class TimeWindow:
    """The latest ``maxlen`` time-ordered samples of a track (a time and ``width`` values each), in numpy buffers.

    Why not a deque: the link rules and the identity tracker read a track *as of* a decision time at every decision;
    here that is a binary search and two array slices (:meth:`until`), not a copy of the whole path. Appending is
    amortised O(1) (the buffer holds twice the window and slides back when full). A sample not later than the last
    one is ignored. Views from :meth:`until` share the buffers: they are valid until the next :meth:`add`.
    """

    def __init__(self, maxlen: int = 600, width: int = 2) -> None:
        if maxlen < 1 or width < 1:
            raise ValueError(f"need maxlen >= 1 and width >= 1, got {maxlen}, {width}")
        self.maxlen = maxlen
        self._ts = np.empty(2 * maxlen, dtype=np.float64)
        self._values = np.empty((2 * maxlen, width), dtype=np.float64)
        self._lo = self._hi = 0

    def add(self, ts: float, values: np.ndarray | tuple[float, ...]) -> None:
        if self._hi > self._lo and ts <= self._ts[self._hi - 1]:
            return
        if self._hi == len(self._ts):  # slide the window back to the start of the buffer
            keep = self._hi - self._lo
            self._ts[:keep] = self._ts[self._lo : self._hi]
            self._values[:keep] = self._values[self._lo : self._hi]
            self._lo, self._hi = 0, keep
        self._ts[self._hi] = ts
        self._values[self._hi] = values
        self._hi += 1
        if self._hi - self._lo > self.maxlen:
            self._lo += 1

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def ts(self) -> np.ndarray:
        return self._ts[self._lo : self._hi]

    @property
    def values(self) -> np.ndarray:
        return self._values[self._lo : self._hi]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ts, self.values

    def count_until(self, as_of: float) -> int:
        """How many samples are at or before ``as_of`` (the view :meth:`until` would hold, without making it)."""
        return int(np.searchsorted(self.ts, as_of, side="right"))

    def last_ts(self, as_of: float) -> float | None:
        """The time of the latest sample at or before ``as_of``."""
        n = self.count_until(as_of)
        return float(self._ts[self._lo + n - 1]) if n else None

    def until(self, as_of: float) -> TimeWindow:
        """A view of the samples at or before ``as_of``."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._hi = self._lo + int(np.searchsorted(self.ts, as_of, side="right"))
        return view

    def since(self, start: float) -> TimeWindow:
        """A view of the samples at or after ``start``."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._lo = self._lo + int(np.searchsorted(self.ts, start, side="left"))
        return view


class GroundTrack(TimeWindow):
    """A track's recent ground positions: times and (x, y), a bounded window (``geometry.history`` samples)."""

    def __init__(self, maxlen: int = 600) -> None:
        super().__init__(maxlen, 2)

    @property
    def xy(self) -> np.ndarray:
        return self.values


def nearest_in_time(t: np.ndarray, at: np.ndarray, max_dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """For each time of ``at``, the index of the nearest time of ``t`` (sorted, not empty) and whether it lies within
    ``max_dt_s``: one moment of two sighting sequences."""
    if len(t) > 1:  # nearest of the two neighbours
        j = np.searchsorted(t, at)
        np.clip(j, 1, len(t) - 1, out=j)
        j -= np.abs(t[j - 1] - at) <= np.abs(t[j] - at)
    else:
        j = np.zeros(len(at), np.int64)
    return j, np.abs(t[j] - at) <= max_dt_s


def co_visible_pairs(a: GroundTrack, b: GroundTrack, max_dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The moments both tracks were seen (within ``max_dt_s``): the times of the shorter track's moments, in order,
    and the ground distance at each (a moment counts once: each of the shorter track's finds its nearest in the
    longer).

    Only the common time span is compared (two binary searches), so a pair that never overlaps in time costs no
    array work: the link rules ask this of every pair of live and recently ended tracks at each decision."""
    none = np.zeros(0), np.zeros(0)
    if not len(a) or not len(b):
        return none
    ta, tb = a.ts, b.ts
    lo, hi = max(ta[0], tb[0]) - max_dt_s, min(ta[-1], tb[-1]) + max_dt_s
    if lo > hi:
        return none
    ia = slice(int(np.searchsorted(ta, lo)), int(np.searchsorted(ta, hi, side="right")))
    ib = slice(int(np.searchsorted(tb, lo)), int(np.searchsorted(tb, hi, side="right")))
    ta, xa, tb, xb = ta[ia], a.xy[ia], tb[ib], b.xy[ib]
    if not len(ta) or not len(tb):
        return none
    if len(ta) > len(tb):
        ta, xa, tb, xb = tb, xb, ta, xa
    j, close = nearest_in_time(tb, ta, max_dt_s)
    d = xa[close] - xb[j[close]]
    return ta[close], np.sqrt(np.einsum("ij,ij->i", d, d))


def co_visible_distance(a: GroundTrack, b: GroundTrack, max_dt_s: float) -> tuple[float, int]:
    """Median ground distance over the moments both tracks were seen (within ``max_dt_s``), and their count
    (:func:`co_visible_pairs`)."""
    d = co_visible_pairs(a, b, max_dt_s)[1]
    n = len(d)
    if not n:
        return float("nan"), 0
    d.sort()  # the median, without np.median's overhead (this runs for every co-visible pair at every decision)
    return float(d[n // 2] if n % 2 else 0.5 * (d[n // 2 - 1] + d[n // 2])), n


def judge(a: GroundTrack, b: GroundTrack, config: GeometryConfig) -> int:
    """AGREE, DISAGREE or UNKNOWN: what the ground says about tracks ``a`` and ``b`` being one person."""
    if not len(a) or not len(b):
        return UNKNOWN
    dist, n = co_visible_distance(a, b, config.max_dt_s)
    if n >= config.min_common:
        if dist <= config.same_place:
            return AGREE
        if dist >= config.different_place:
            return DISAGREE
        return UNKNOWN
    if n:  # seen together only briefly: too little to tell
        return UNKNOWN
    first, second = (a, b) if a.ts[0] <= b.ts[0] else (b, a)
    gap = float(second.ts[0] - first.ts[-1])
    if gap <= 0:  # overlapping in time but never within max_dt_s of each other: no evidence
        return UNKNOWN
    (x0, y0), (x1, y1) = first.xy[-1].tolist(), second.xy[0].tolist()
    dist = math.hypot(x1 - x0, y1 - y0)
    # Allow the position noise of both ends (same_place) on top of walking at max_speed.
    return DISAGREE if dist > config.max_speed * gap + config.same_place else UNKNOWN
