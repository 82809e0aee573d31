"""What the calibration page works on, without HTTP: each camera's clean frame, its current homography and saved
points, the files a calibration writes next to the pipeline config, the config lines to paste, the floor plan,
and the top view of a fit.

Why the files go next to the config file: a config's relative paths are relative to it, so ``homography:
homography-c0.txt`` reads what the page wrote; the page never edits the YAML itself (comments and layout are the
user's), it shows the lines to paste. A camera's points are kept beside its matrix (``calibration-<camera>.csv``,
the ``u,v,x,y`` rows ``python -m pipeline.calibrate --points`` reads), so a calibration can be reopened and
refined instead of clicked again. Each file is written whole to a temporary name and renamed: a pipeline that
loads its config meanwhile reads the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import yaml

from pipeline.calibration import (
    Fit,
    PointPair,
    PointsError,
    floor_samples,
    footprint,
    ground_extent,
    read_points_csv,
)
from pipeline.snapshots import Snapshot, SnapshotError, read_snapshot, snapshot_folder, snapshot_path
from reid.identity.geometry import CalibrationError, Homography
from reid.paths import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

FLOOR_PLAN_IMAGE = "floor_plan.png"
FLOOR_PLAN_SETTINGS = "floor_plan.json"
MAX_PLAN_SIDE_PX = 8192  # a floor plan larger than this is a photo of a wall, not a plan (and costs memory)
FOOTPRINT_REACH = 1.0  # a footprint stops this many times the view's ground extent from its nearest point
# The geometry section to add in a config that has none: ``units: m`` brings the metre defaults
# (reid.identity.geometry.METRE_DEFAULTS).
GEOMETRY_LINES = "geometry:\n  units: m\n"


class FrameError(LookupError):
    """A camera with no frame to show: no snapshot yet and no recorded source to read one from."""


class SaveRefused(Exception):
    """A save that would replace a calibration the page did not say it replaces."""


@dataclass(frozen=True)
class SiteCamera:
    """A camera as the config gives it: where its frames come from and its homography, if any."""

    id: str
    source: str | int
    live: bool
    matrix: list[list[float]] | None


@dataclass(frozen=True)
class CameraFrame:
    """A clean frame of a camera. ``image`` may be smaller than the camera's frame (a snapshot is downscaled):
    ``width`` x ``height`` is the camera's own pixel space, the one its homography maps."""

    image: np.ndarray  # BGR
    width: int
    height: int
    origin: str  # where it came from, for the page: "frame 0 of terrace1-c0.mp4", "snapshot of frame 812"

    @property
    def scale(self) -> float:
        """Image pixels per camera pixel."""
        return self.image.shape[1] / self.width

    def jpeg(self) -> bytes:
        ok, buf = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise FrameError("the frame could not be encoded as JPEG")
        return buf.tobytes()


@dataclass(frozen=True)
class FloorPlan:
    """A floor plan image and where the ground frame lies on it: ground (x, y) metres is plan pixel
    ``origin_px + pixels_per_metre * (x, y)`` (x to the right, y down the plan)."""

    pixels_per_metre: float
    origin_px: tuple[float, float]
    width: int
    height: int

    def to_json(self) -> dict[str, Any]:
        return {"pixels_per_metre": self.pixels_per_metre, "origin_px": list(self.origin_px), "width": self.width,
                "height": self.height}


def read_source_frame(source: str, index: int) -> np.ndarray | None:
    """Frame ``index`` of a video file, or image ``index`` (in name order) of an image folder; None when it
    cannot be read."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return cv2.imread(str(files[min(index, len(files) - 1)])) if files else None
    cap = cv2.VideoCapture(str(path))
    try:
        if index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        return frame if ok else None
    finally:
        cap.release()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def points_csv(points: list[PointPair]) -> str:
    """The points as the ``u,v,x,y`` CSV that :func:`pipeline.calibration.read_points_csv` reads."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["u", "v", "x", "y"])
    writer.writerows([f"{p.u:.2f}", f"{p.v:.2f}", f"{p.x:.4f}", f"{p.y:.4f}"] for p in points)
    return out.getvalue()


def capped_footprint(homography: Homography, width: int, height: int) -> np.ndarray:
    """The view's outline on the ground, rows near the horizon cut at :data:`FOOTPRINT_REACH` times its extent
    (they project towards infinity and would dwarf every other camera)."""
    extent = ground_extent(homography, width, height)
    return footprint(homography, width, height, FOOTPRINT_REACH * extent if np.isfinite(extent) else None)


def view_bounds(homography: Homography, width: int, height: int, ground_xy: np.ndarray, far: float = 0.35,
                margin: float = 0.5) -> tuple[float, float, float, float]:
    """Ground bounds (x0, y0, x1, y1) for a top view of a calibration: the points and ``margin`` of their spread
    around them (where the fit is to be judged: farther out it is an extrapolation), cut to the floor that the
    lower ``1 - far`` of the image sees (as :func:`ground_extent` measures it) so as not to draw mostly black."""
    xy = np.asarray(ground_xy, np.float64).reshape(-1, 2)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = margin * float((hi - lo).max()) or 1.0
    seen = np.concatenate([floor_samples(homography, width, height, far), xy])
    inner_lo, inner_hi = np.maximum(lo - pad, seen.min(axis=0)), np.minimum(hi + pad, seen.max(axis=0))
    edge = 0.1 * pad  # room for the markers of points at the edge of what the image sees
    x0, y0 = np.minimum(inner_lo, lo - edge)
    x1, y1 = np.maximum(inner_hi, hi + edge)
    return float(x0), float(y0), float(x1), float(y1)


def top_view(image: np.ndarray, homography: Homography, bounds: tuple[float, float, float, float],
             size_px: int) -> np.ndarray:
    """``image`` warped onto the ground: ``bounds`` (x0, y0, x1, y1, ground units) drawn ``size_px`` pixels on
    its longer side, x to the right and y down. ``homography`` maps ``image``'s own pixels. Ground beyond the
    image's horizon is left black: the warp would otherwise mirror the sky onto it."""
    x0, y0, x1, y1 = bounds
    scale = size_px / max(x1 - x0, y1 - y0)
    w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    to_px = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale], [0, 0, 1]])
    out = cv2.warpPerspective(image, to_px @ homography.matrix, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
    # A ground point g is seen by the image where H^-1 g has w of the homography's ground sign.
    row = np.linalg.inv(homography.matrix)[2]
    xs, ys = x0 + (np.arange(w) + 0.5) / scale, y0 + (np.arange(h) + 0.5) / scale
    behind = (row[0] * xs[None, :] + row[1] * ys[:, None] + row[2]) * homography.ground_sign <= 0
    out[behind] = 0
    return out


class CalibrationSite:
    """The cameras of one pipeline config and the folder of that config (None: nothing can be written there,
    every save is offered as a download)."""

    def __init__(self, cameras: list[SiteCamera], run_dir: Path, config_path: Path | None,
                 units: str | None = None) -> None:
        self.cameras = {c.id: c for c in cameras}
        self.units = units  # the config's geometry.units (None: free units, or no geometry section)
        self.run_dir = run_dir
        self.config_path = config_path.resolve() if config_path is not None else None
        self._frames: dict[str, tuple[int | None, CameraFrame]] = {}  # camera -> (snapshot frame, frame)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: PipelineConfig, config_path: Path | None) -> CalibrationSite:
        cams = [SiteCamera(c.id, c.source, c.is_live, c.homography if isinstance(c.homography, list) else None)
                for c in config.cameras]
        return cls(cams, config.resolved_run_dir, config_path, config.geometry.units if config.geometry else None)

    @property
    def folder(self) -> Path | None:
        return self.config_path.parent if self.config_path is not None else None

    def camera(self, camera_id: str) -> SiteCamera:
        try:
            return self.cameras[camera_id]
        except KeyError:
            raise LookupError(f"no camera {camera_id!r} (cameras: {', '.join(self.cameras)})") from None

    # -- frames ----------------------------------------------------------------------------------------------
    def frame(self, camera_id: str, latest: bool = True) -> CameraFrame:
        """The camera's clean frame: the frame of its latest snapshot read from its recorded source (full
        resolution), else the snapshot's own downscaled JPEG (a live camera), else the source's first frame.
        One frame per camera is cached: ``latest`` False takes it whatever snapshots came since (a fit's top view
        shows the frame the page shows, without reading a video again at each keystroke)."""
        cam = self.camera(camera_id)
        with self._lock:
            cached = self._frames.get(cam.id)
        if cached is not None and not latest:
            return cached[1]
        snap = None
        try:
            snap = read_snapshot(snapshot_path(snapshot_folder(self.run_dir), cam.id))
        except FileNotFoundError:
            pass
        except SnapshotError as e:
            log.warning("camera %s: %s", cam.id, e)
        key = snap.frame_index if snap is not None else None
        if cached is not None and cached[0] == key:
            return cached[1]
        frame = self._read_frame(cam, snap)
        with self._lock:
            self._frames[cam.id] = (key, frame)
        return frame

    @staticmethod
    def _read_frame(cam: SiteCamera, snap: Snapshot | None) -> CameraFrame:
        if not cam.live:
            index = snap.frame_index if snap is not None else 0
            img = read_source_frame(str(cam.source), index)
            if img is not None:
                return CameraFrame(img, img.shape[1], img.shape[0], f"frame {index} of {Path(str(cam.source)).name}")
        if snap is not None and snap.frame_size is None:  # a downscaled JPEG of unknown scale: clicks on it would
            raise FrameError(f"camera {cam.id}: its snapshot predates frame sizes; wait for the running "  # be wrong
                             "pipeline to write a new one")
        if snap is not None:
            img = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if img is not None:
                w, h = snap.frame_size
                return CameraFrame(img, w, h, f"snapshot of frame {snap.frame_index}")
        if cam.live:
            raise FrameError(f"camera {cam.id}: no frame yet (a live camera's frame is the running pipeline's "
                             "latest snapshot)")
        raise FrameError(f"camera {cam.id}: no snapshot and its source {cam.source} gives no frame")

    # -- current calibration -------------------------------------------------------------------------------------
    def homography_file(self, camera_id: str) -> str:
        return f"homography-{camera_id}.txt"

    def points_file(self, camera_id: str) -> str:
        return f"calibration-{camera_id}.csv"

    def saved_path(self, camera_id: str) -> Path | None:
        """The homography file a save writes (it may not exist yet); None without a config folder."""
        return self.folder / self.homography_file(camera_id) if self.folder is not None else None

    def current(self, camera_id: str) -> tuple[Homography | None, str | None]:
        """The camera's latest calibration and where it is from: the file this page saved next to the config
        (newer than what the running config read), else the config's homography."""
        cam = self.camera(camera_id)
        path = self.saved_path(camera_id)
        if path is not None and path.is_file():
            try:
                return Homography.load(path), path.name
            except CalibrationError as e:
                log.warning("camera %s: %s", camera_id, e)
        if cam.matrix is not None:
            return Homography(cam.matrix), "config"
        return None, None

    def saved_points(self, camera_id: str) -> list[PointPair]:
        if self.folder is None or not (path := self.folder / self.points_file(camera_id)).is_file():
            return []
        try:
            return read_points_csv(path)
        except PointsError as e:
            log.warning("camera %s: %s", camera_id, e)
            return []

    # -- saving --------------------------------------------------------------------------------------------------
    def save(self, camera_id: str, fit: Fit, replace: bool) -> dict[str, Any]:
        """Write the matrix and its points next to the config; when that folder cannot be written, answer their
        texts for download instead. Refuses (:class:`SaveRefused`) to replace an existing matrix file unless
        ``replace`` says the page has shown that it will."""
        self.camera(camera_id)
        name, points_name = self.homography_file(camera_id), self.points_file(camera_id)
        text = fit.to_text(note=f"camera {camera_id}, calibration page, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        rows = points_csv(fit.points)
        lines, note = self.config_lines(camera_id)
        answer: dict[str, Any] = {"config_lines": lines, "config_note": note,
                                  "config_file": str(self.config_path) if self.config_path else None}
        folder = self.folder
        if folder is None:
            return {**answer, "saved": False, "reason": "the service does not know the config file",
                    "download": {name: text, points_name: rows}}
        path = folder / name
        with self._lock:
            existed = path.exists()
            if existed and not replace:
                raise SaveRefused(f"{path} exists: the page must say it replaces it (send replace: true)")
            try:
                # the points first: if the matrix then cannot be written, the old matrix stays (the answer says
                # nothing was saved), and the points only reopen on the page
                write_atomic(folder / points_name, rows.encode())
                write_atomic(path, text.encode())
            except OSError as e:
                log.warning("camera %s: calibration not written to %s (%s); offered for download", camera_id,
                            folder, e.strerror or e)
                return {**answer, "saved": False, "reason": f"{folder} is not writable ({e.strerror or e})",
                        "download": {name: text, points_name: rows}}
        log.info("camera %s: wrote %s and %s (%s)", camera_id, path, points_name, fit.summary())
        return {**answer, "saved": True, "path": str(path), "points_path": str(folder / points_name),
                "replaced": existed}

    def config_lines(self, camera_id: str) -> tuple[str, str]:
        """The YAML lines that make the config read this camera's saved matrix, and where they go. Read from the
        config file as it is now (it may have been edited since the service started)."""
        name = self.homography_file(camera_id)
        raw: Any = None
        if self.config_path is not None:
            try:
                raw = yaml.safe_load(self.config_path.read_text())
            except (OSError, yaml.YAMLError) as e:
                log.warning("%s: %s", self.config_path, e)
        if not isinstance(raw, dict):
            raw = {}
        cams = raw.get("cameras") if isinstance(raw.get("cameras"), list) else []
        entry = next((c for c in cams if isinstance(c, dict) and c.get("id") == camera_id), {})
        current = entry.get("homography")
        where = self.config_path.name if self.config_path is not None else "the pipeline config"
        lines = f"cameras:\n  - id: {camera_id}\n    homography: {name}\n"
        if isinstance(current, str) and self.folder is not None and \
                (self.folder / current).resolve() == (self.folder / name).resolve():
            note = f"{where} already reads {name} for camera {camera_id}: restart the pipeline to use the new matrix"
        elif current is not None:
            note = f"In {where}, replace camera {camera_id}'s homography line with this one"
        else:
            note = f"In {where}, add the homography line to camera {camera_id}'s entry"
        if entry.get("ground_offset") is not None:
            note += (f"; camera {camera_id} also has ground_offset {entry['ground_offset']}, measured against its "
                     "previous calibration: remove it and run python -m pipeline.site_check again")
        geometry = raw.get("geometry")
        if not geometry:
            lines += GEOMETRY_LINES
            note += "; the config has no geometry section: add it (metre defaults)"
        elif not isinstance(geometry, dict) or geometry.get("units") != "m":
            lines += GEOMETRY_LINES
            note += ("; this matrix maps to metres but the config's geometry section is not declared in metres: set "
                     "units: m there, give any same_place, different_place, max_speed in metres (or drop them for "
                     "the metre defaults), and calibrate the other cameras here too")
        return lines, note

    # -- floor plan ----------------------------------------------------------------------------------------------
    def floor_plan(self) -> FloorPlan | None:
        if self.folder is None:
            return None
        image, settings = self.folder / FLOOR_PLAN_IMAGE, self.folder / FLOOR_PLAN_SETTINGS
        if not (image.is_file() and settings.is_file()):
            return None
        try:
            d = json.loads(settings.read_text())
            return FloorPlan(float(d["pixels_per_metre"]), (float(d["origin_px"][0]), float(d["origin_px"][1])),
                             int(d["width"]), int(d["height"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            log.warning("%s: not a floor plan's settings (%s)", settings, e)
            return None

    def floor_plan_image(self) -> Path | None:
        path = self.folder / FLOOR_PLAN_IMAGE if self.folder is not None else None
        return path if path is not None and path.is_file() else None

    def save_floor_plan(self, image: np.ndarray | None, pixels_per_metre: float,
                        origin_px: tuple[float, float]) -> FloorPlan:
        """Keep a floor plan (``image`` None: the current one with new settings) next to the config; raises
        OSError when that folder cannot be written, ValueError when there is no plan to set."""
        if self.folder is None:
            raise OSError("the service does not know the config file, so has no folder for a floor plan")
        with self._lock:
            if image is None:
                current = self.floor_plan()
                if current is None:
                    raise ValueError("no floor plan yet: upload an image of it")
                size = (current.width, current.height)
            else:
                ok, buf = cv2.imencode(".png", image)
                if not ok:
                    raise ValueError("the floor plan could not be encoded as PNG")
                write_atomic(self.folder / FLOOR_PLAN_IMAGE, buf.tobytes())
                size = (image.shape[1], image.shape[0])
            plan = FloorPlan(pixels_per_metre, origin_px, *size)
            write_atomic(self.folder / FLOOR_PLAN_SETTINGS, json.dumps(plan.to_json(), indent=1).encode())
        return plan
