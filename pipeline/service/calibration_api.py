"""The calibration page's routes: pick a camera, click floor points on its frame, give their ground positions in
metres, see the fit, save the matrix next to the pipeline config.

    GET  /calibrate                               the page (static/calibrate.html)
    GET  /api/calibration                         cameras (size, current matrix, saved points, footprint), floor plan
    GET  /api/calibration/{camera}/frame.jpg      the camera's clean frame (no boxes)
    POST /api/calibration/{camera}/fit            {"points": [{"u","v","x","y"}...], "ransac_px"} -> the fit
    POST /api/calibration/{camera}/save           the same and "replace" -> written paths, or texts to download
    POST /api/calibration/floor_plan              multipart: image (optional), pixels_per_metre, origin_x, origin_y
    GET  /api/calibration/floor_plan.png          the floor plan
    GET  /api/calibration/site_check              the run's latest ``python -m pipeline.site_check`` report
    GET  /api/calibration/site_check.png          ... and its plots

The fit itself is :func:`pipeline.calibration.fit_homography`, the one ``python -m pipeline.calibrate`` uses; its
errors name the page's point numbers and answer 400. Nothing here grows with use: the top view of a fit travels
in the fit's answer (a data URL), the files are one per camera and one floor plan.
"""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from pipeline.calibration import DEFAULT_RANSAC_PX, Fit, PointPair, PointsError, fit_homography
from pipeline.search import PhotoError, decode_photo
from pipeline.service.calibration_site import (
    MAX_PLAN_SIDE_PX,
    CalibrationSite,
    CameraFrame,
    FloorPlan,
    FrameError,
    SaveRefused,
    capped_footprint,
    top_view,
    view_bounds,
)
from pipeline.site_check import REPORT_FOLDER, REPORT_JSON, REPORT_PNG
from reid.identity.geometry import Homography

STATIC = Path(__file__).parent / "static"
MAX_POINTS = 100
TOP_VIEW_PX = 480  # the top view's longer side


class PointIn(BaseModel):
    """One clicked point: image pixel (u, v) in the camera's own pixels, ground (x, y) in metres."""

    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(None, ge=1, description="the point's number on the page (default: its place in the list)")
    u: float = Field(allow_inf_nan=False)
    v: float = Field(allow_inf_nan=False)
    x: float = Field(allow_inf_nan=False)
    y: float = Field(allow_inf_nan=False)


class FitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[PointIn] = Field(max_length=MAX_POINTS)
    ransac_px: float = Field(DEFAULT_RANSAC_PX, gt=0, le=100, description="RANSAC threshold, image pixels")


class SaveBody(FitBody):
    replace: bool = Field(False, description="the page has said that the camera's matrix file will be replaced")


def _finite(value: float) -> float | None:
    """JSON has no infinity: a point beyond the horizon has no error."""
    return float(value) if math.isfinite(value) else None


def _data_url(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("the top view could not be encoded as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def fit_json(camera_id: str, frame: CameraFrame, fit: Fit) -> dict[str, Any]:
    """The fit as the page draws it: per point its errors, whether RANSAC kept it and where its ground position
    falls in the image; the camera's footprint; the frame warped onto the ground."""
    h = fit.homography
    inverse = np.linalg.inv(h.matrix)
    gnd = np.array([[p.x, p.y] for p in fit.points])
    back = np.c_[gnd, np.ones(len(gnd))] @ inverse.T
    with np.errstate(divide="ignore", invalid="ignore"):
        image_xy = back[:, :2] / back[:, 2:3]
    points = []
    for p, ge, ie, ok, xy in zip(fit.points, fit.ground_error, fit.image_error, fit.inliers, image_xy, strict=True):
        points.append({"n": p.row, "u": p.u, "v": p.v, "x": p.x, "y": p.y, "ground_error": _finite(ge),
                       "image_error": _finite(ie), "inlier": bool(ok),
                       "image_xy": [float(xy[0]), float(xy[1])] if np.isfinite(xy).all() else None})
    bounds = view_bounds(h, frame.width, frame.height, gnd)
    # the homography of the frame's own pixels (a snapshot may be downscaled)
    in_image = Homography(h.matrix @ np.diag([1 / frame.scale, 1 / frame.scale, 1.0]))
    view = top_view(frame.image, in_image, bounds, TOP_VIEW_PX)
    return {"camera": camera_id, "matrix": h.matrix.tolist(), "inverse": inverse.tolist(),
            "ground_sign": h.ground_sign, "points": points, "summary": fit.summary(), "outliers": fit.outlier_rows,
            "footprint": capped_footprint(h, frame.width, frame.height).tolist(),
            "top_view": {"image": _data_url(view), "bounds": list(bounds), "width": view.shape[1],
                         "height": view.shape[0]}}


def plan_json(plan: FloorPlan | None, site: CalibrationSite) -> dict[str, Any] | None:
    path = site.floor_plan_image()
    if plan is None or path is None:
        return None
    return {**plan.to_json(), "url": f"/api/calibration/floor_plan.png?v={path.stat().st_mtime_ns}"}


def add_calibration_routes(app: FastAPI, site: CalibrationSite | None, max_upload_bytes: int) -> None:
    """Register the page and its API on ``app`` (errors answered by the app's JSON handlers, behind its token).
    ``site`` None (a service built without its pipeline config) answers 404 with why."""

    def get_site() -> CalibrationSite:
        if site is None:
            raise HTTPException(404, "no calibration: this service was started without its pipeline config")
        return site

    def get_frame(camera_id: str, latest: bool = False) -> CameraFrame:
        try:
            return get_site().frame(camera_id, latest)
        except (LookupError, FrameError) as e:  # FrameError is a LookupError: no camera, or no frame of it
            raise HTTPException(404, str(e.args[0])) from None

    def fitted(camera_id: str, body: FitBody) -> tuple[CameraFrame, Fit]:
        frame = get_frame(camera_id)
        pairs = [PointPair(p.u, p.v, p.x, p.y, p.n or n) for n, p in enumerate(body.points, start=1)]
        numbers = [p.row for p in pairs]
        if len(set(numbers)) != len(numbers):  # errors name points by number: each must name one
            raise HTTPException(400, f"point numbers repeat: {sorted(n for n in set(numbers) if numbers.count(n) > 1)}")
        outside = [str(p.row) for p in pairs if not (0 <= p.u <= frame.width and 0 <= p.v <= frame.height)]
        if outside:
            raise HTTPException(400, f"points {', '.join(outside)} lie outside camera {camera_id}'s "
                                     f"{frame.width}x{frame.height} frame")
        try:
            return frame, fit_homography(pairs, body.ransac_px, what="points")
        except PointsError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/calibrate", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "calibrate.html")

    def site_check_file(name: str) -> Path:
        path = get_site().run_dir / REPORT_FOLDER / name
        if not path.is_file():
            how = f" --cameras {site.config_path}" if site is not None and site.config_path else " --cameras CONFIG"
            raise HTTPException(404, f"no site check in this run yet: python -m pipeline.site_check{how} measures "
                                     "same_place, different_place and max_speed from the recorded video")
        return path

    @app.get("/api/calibration/site_check")
    def site_check() -> Response:
        """The suggestions, their evidence and the warnings of the run's latest site check."""
        return Response(site_check_file(REPORT_JSON).read_bytes(), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/calibration/site_check.png")
    def site_check_plot() -> FileResponse:
        return FileResponse(site_check_file(REPORT_PNG), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/calibration")
    def calibration() -> dict[str, Any]:
        s = get_site()
        cameras = []
        for cam in s.cameras.values():
            frame: CameraFrame | None = None
            size: tuple[int, int] | None = None
            missing: str | None = None
            try:
                frame = s.frame(cam.id, latest=False)
                size = (frame.width, frame.height)
            except FrameError as e:
                missing = str(e.args[0])
            h, source = s.current(cam.id)
            saved = s.saved_path(cam.id)
            cameras.append({
                "id": cam.id, "live": cam.live, "width": size[0] if size else None,
                "height": size[1] if size else None,
                "frame": f"/api/calibration/{cam.id}/frame.jpg" if size else None,
                "frame_origin": frame.origin if frame else None, "frame_error": missing,
                "calibrated": h is not None, "matrix": h.matrix.tolist() if h else None, "matrix_from": source,
                "file": s.homography_file(cam.id), "file_exists": bool(saved and saved.is_file()),
                "points": [{"u": p.u, "v": p.v, "x": p.x, "y": p.y} for p in s.saved_points(cam.id)],
                "footprint": capped_footprint(h, *size).tolist() if h and size else None})
        folder = s.folder
        return {"config_file": str(s.config_path) if s.config_path else None,
                "writable": bool(folder and os.access(folder, os.W_OK)), "units": "m",
                "config_units": s.units, "cameras": cameras,
                "floor_plan": plan_json(s.floor_plan(), s)}

    @app.get("/api/calibration/floor_plan.png")
    def floor_plan_image() -> FileResponse:
        path = get_site().floor_plan_image()
        if path is None:
            raise HTTPException(404, "no floor plan yet")
        return FileResponse(path, media_type="image/png")

    @app.post("/api/calibration/floor_plan")
    def floor_plan(pixels_per_metre: Annotated[float, Form(gt=0, allow_inf_nan=False)],
                   origin_x: Annotated[float, Form(allow_inf_nan=False)] = 0.0,
                   origin_y: Annotated[float, Form(allow_inf_nan=False)] = 0.0,
                   image: Annotated[UploadFile | None, File()] = None) -> dict[str, Any]:
        """Upload a floor plan with its scale and the plan pixel of ground (0, 0); without an image, change the
        current plan's scale and origin."""
        s = get_site()
        img = None
        if image is not None:
            data = image.file.read(max_upload_bytes + 1)
            name = image.filename or "floor plan"
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"{name}: larger than the {max_upload_bytes} bytes allowed")
            try:
                img = decode_photo(data, name, MAX_PLAN_SIDE_PX)  # the size checked before decoding
            except PhotoError as e:
                raise HTTPException(400, str(e)) from None
        try:
            plan = s.save_floor_plan(img, pixels_per_metre, (origin_x, origin_y))
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        except OSError as e:
            raise HTTPException(409, f"the floor plan cannot be kept in {s.folder}: {e.strerror or e}") from None
        return {"floor_plan": plan_json(plan, s)}

    @app.get("/api/calibration/{camera_id}/frame.jpg")
    def frame(camera_id: str) -> Response:
        return Response(get_frame(camera_id, latest=True).jpeg(), media_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})

    @app.post("/api/calibration/{camera_id}/fit")
    def fit(camera_id: str, body: FitBody) -> dict[str, Any]:
        frame, result = fitted(camera_id, body)
        return fit_json(camera_id, frame, result)

    @app.post("/api/calibration/{camera_id}/save")
    def save(camera_id: str, body: SaveBody) -> dict[str, Any]:
        _, result = fitted(camera_id, body)
        try:
            answer = get_site().save(camera_id, result, body.replace)
        except SaveRefused as e:
            raise HTTPException(409, str(e)) from None
        return {**answer, "matrix": result.matrix.tolist(), "summary": result.summary()}
