"""The calibration page against the real service (uvicorn in a thread, ``start_service`` as both entry points call
it) on a config of two EPFL terrace1 cameras: c1 calibrated (the shipped matrix, in metres), c0 not. Its API over
HTTP, the files it writes next to the config, and the page itself in headless Chromium: four points clicked on
c0's real frame and typed, saved, the written matrix checked against the clicks; then ``docs/calibration_page.png``.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.calibration import PointPair, fit_homography, read_points_csv
from pipeline.config import load_config
from pipeline.service.app import ServiceContext, create_app
from pipeline.service.calibration_api import fit_json
from pipeline.service.calibration_site import (
    CalibrationSite,
    CameraFrame,
    FrameError,
    SiteCamera,
    read_source_frame,
    top_view,
)
from pipeline.service.config import HttpConfig
from pipeline.service.server import ServiceThread, start_service
from pipeline.site_check import REPORT_FOLDER, REPORT_JSON, REPORT_PNG
from pipeline.snapshots import SnapshotWriter, snapshot_folder
from reid.identity.album import Album
from reid.identity.config import MatcherConfig
from reid.identity.geometry import Homography
from reid.identity.store import IdentityStore
from reid.paths import PROJECT_ROOT, shared_root
from tests.redis_server import redis_server  # noqa: F401 - fixture

from .http_client import get_json, request
from .test_service import chromium, headless_chrome

TERRACE = shared_root() / "video" / "epfl_terrace1"
CM_TO_M = np.diag([0.01, 0.01, 1.0])  # the dataset's ground units are centimetres
# well spread floor points of the 360x288 terrace1 frames (u, v)
C0_PIXELS = [(40.0, 200.0), (330.0, 175.0), (105.0, 135.0), (265.0, 125.0), (70.0, 262.0), (200.0, 160.0)]
C1_PIXELS = [(30.0, 270.0), (330.0, 260.0), (60.0, 150.0), (300.0, 140.0), (180.0, 200.0), (120.0, 240.0)]

pytestmark = pytest.mark.skipif(not (TERRACE / "terrace1-c0.mp4").is_file(),
                                reason=f"{TERRACE} is missing (the shared data)")


def shipped(camera: str) -> Homography:
    """The dataset's homography of ``camera``, mapping to metres."""
    return Homography(CM_TO_M @ Homography.load(TERRACE / f"homography-{camera}.txt").matrix)


def ground_of(h: Homography, pixels: list[tuple[float, float]]) -> np.ndarray:
    g, ok = h.project(np.array(pixels))
    assert ok.all()
    return g


def points_body(pixels: list[tuple[float, float]], ground: np.ndarray, **extra) -> bytes:
    pts = [{"u": u, "v": v, "x": float(x), "y": float(y)} for (u, v), (x, y) in zip(pixels, ground, strict=True)]
    return json.dumps({"points": pts, **extra}).encode()


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    return get_json(url, data=body, headers={"Content-Type": "application/json"})


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\n"
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
              for k, (name, data) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


def max_map_difference(a: Homography, b: Homography) -> float:
    """The largest ground distance between two matrices' maps of the lower two thirds of a 360x288 frame."""
    us, vs = np.meshgrid(np.linspace(0, 360, 10), np.linspace(100, 288, 10))
    px = np.c_[us.ravel(), vs.ravel()]
    return float(np.linalg.norm(a.project(px)[0] - b.project(px)[0], axis=1).max())


@pytest.fixture(scope="module")
def site(tmp_path_factory, redis_server):  # noqa: F811 - the fixture
    """The service of a two-camera terrace1 config in a folder of its own; yields (url, config folder)."""
    folder = tmp_path_factory.mktemp("site")
    np.savetxt(folder / "homography-c1.txt", shipped("c1").matrix)
    cfg = folder / "cams.yaml"
    cfg.write_text(f"name: calibration\nrun_dir: {folder / 'run'}\ncameras:\n"
                   f"  - id: c0\n    source: {TERRACE / 'terrace1-c0.mp4'}\n"
                   f"  - id: c1\n    source: {TERRACE / 'terrace1-c1.mp4'}\n    homography: homography-c1.txt\n"
                   "geometry:\n  units: m\n")  # the metre defaults
    config = load_config(cfg)
    service, store = start_service(config, HttpConfig(port=0), redis_server.url, None, lambda: {}, cfg)
    try:
        yield service.url, folder
    finally:
        service.stop()
        store.close()


# -- the API -------------------------------------------------------------------------------------------------------


def test_without_a_token_only_a_loopback_name_is_served(site):
    """A page at evil.example whose name resolves to 127.0.0.1 (DNS rebinding) sends Host and Origin evil.example:
    the service without a token answers only to loopback names."""
    url, _ = site
    port = url.rsplit(":", 1)[1]
    status, body = get_json(f"{url}/api/calibration", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and "loopback" in body["error"]
    assert get_json(f"{url}/api/calibration", headers={"Host": f"localhost:{port}"})[0] == 200


def test_the_site_lists_cameras_with_their_frames(site):
    url, _ = site
    status, body = get_json(f"{url}/api/calibration")
    assert status == 200 and body["units"] == "m" and body["writable"] and body["floor_plan"] is None
    assert body["config_units"] == "m"
    cams = {c["id"]: c for c in body["cameras"]}
    assert (cams["c0"]["width"], cams["c0"]["height"], cams["c0"]["calibrated"]) == (360, 288, False)
    assert cams["c1"]["calibrated"] and cams["c1"]["matrix_from"] == "homography-c1.txt"
    assert len(cams["c1"]["footprint"]) > 10 and cams["c0"]["footprint"] is None
    status, jpeg, ctype = request(f"{url}{cams['c0']['frame']}")
    frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and ctype == "image/jpeg" and frame.shape == (288, 360, 3)
    status, html, ctype = request(f"{url}/calibrate")
    assert status == 200 and b"camera-select" in html and ctype.startswith("text/html")


def test_the_site_check_report_is_served_once_a_check_has_run(site):
    url, folder = site
    status, body = get_json(f"{url}/api/calibration/site_check")
    assert status == 404 and "python -m pipeline.site_check --cameras" in body["error"]
    assert str(folder / "cams.yaml") in body["error"]
    out = folder / "run" / REPORT_FOLDER  # where python -m pipeline.site_check writes by default
    out.mkdir(parents=True)
    report = {"units": "m", "suggestions": {"same_place": {"value": 0.31, "why": "measured", "configured": 0.3}},
              "warnings": []}
    (out / REPORT_JSON).write_text(json.dumps(report))
    ok, png = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))
    (out / REPORT_PNG).write_bytes(png.tobytes())
    try:
        assert get_json(f"{url}/api/calibration/site_check") == (200, report)
        status, data = request(f"{url}/api/calibration/site_check.png")[:2]
        assert status == 200 and data == png.tobytes()
    finally:
        (out / REPORT_JSON).unlink()  # the browser test below sees no report


def test_fit_errors_name_the_points(site):
    url, _ = site
    ground = ground_of(shipped("c0"), C0_PIXELS)
    status, body = post_json(f"{url}/api/calibration/c0/fit", points_body(C0_PIXELS[:3], ground[:3]))
    assert status == 400 and "points 1, 2, 3" in body["error"] and "at least 4" in body["error"]
    twice = [C0_PIXELS[0], C0_PIXELS[1], C0_PIXELS[2], C0_PIXELS[1]]
    status, body = post_json(f"{url}/api/calibration/c0/fit", points_body(twice, ground[[0, 1, 2, 3]]))
    assert status == 400 and "points 2 and 4 give the same image point" in body["error"]
    outside = [*C0_PIXELS[:4], (400.0, 10.0)]
    status, body = post_json(f"{url}/api/calibration/c0/fit", points_body(outside, ground[:5]))
    assert status == 400 and body["error"] == "points 5 lie outside camera c0's 360x288 frame"
    status, body = post_json(f"{url}/api/calibration/c0/fit", b'{"points": "none"}')
    assert status == 422 and "points" in body["error"]
    # a malformed point is named as the page numbers it, from 1
    bad = json.loads(points_body(C0_PIXELS[:4], ground[:4]))
    bad["points"][2]["x"] = "two metres"
    status, body = post_json(f"{url}/api/calibration/c0/fit", json.dumps(bad).encode())
    assert status == 422 and body["error"].startswith("body.points[3].x: "), body
    # two points under one number would make every message ambiguous
    numbered = json.loads(points_body(C0_PIXELS[:4], ground[:4]))
    for p, n in zip(numbered["points"], (1, 2, 2, 4), strict=True):
        p["n"] = n
    status, body = post_json(f"{url}/api/calibration/c0/fit", json.dumps(numbered).encode())
    assert status == 400 and body["error"] == "point numbers repeat: [2]"


def test_six_points_recover_the_shipped_matrix_and_an_outlier_is_left_out(site):
    url, _ = site
    truth = shipped("c0")
    ground = ground_of(truth, C0_PIXELS)
    status, fit = post_json(f"{url}/api/calibration/c0/fit", points_body(C0_PIXELS, ground, ransac_px=3))
    assert status == 200, fit
    assert max_map_difference(Homography(fit["matrix"]), truth) < 1e-3  # a millimetre
    assert fit["summary"]["inliers"] == 6 and fit["summary"]["image_error_max_px"] < 1e-3
    assert all(p["inlier"] and p["ground_error"] < 1e-4 for p in fit["points"])
    assert np.allclose([p["image_xy"] for p in fit["points"]], C0_PIXELS, atol=1e-3)
    view = cv2.imdecode(np.frombuffer(base64.b64decode(fit["top_view"]["image"].split(",", 1)[1]), np.uint8),
                        cv2.IMREAD_COLOR)
    assert view.shape[:2] == (fit["top_view"]["height"], fit["top_view"]["width"]) and view.mean() > 20
    x0, y0, x1, y1 = fit["top_view"]["bounds"]
    assert all(x0 < x < x1 and y0 < y < y1 for x, y in ground)
    wrong = np.r_[ground, [ground[1] + [1.5, 0.0]]]  # a seventh point typed 1.5 m off
    status, fit = post_json(f"{url}/api/calibration/c0/fit",
                            points_body([*C0_PIXELS, (150.0, 230.0)], wrong, ransac_px=3))
    assert status == 200 and fit["outliers"] == [7] and not fit["points"][6]["inlier"]
    assert max_map_difference(Homography(fit["matrix"]), truth) < 1e-3


def test_save_refuses_to_replace_silently_and_writes_what_homography_load_reads(site):
    url, folder = site
    truth = shipped("c1")
    body = points_body(C1_PIXELS, ground_of(truth, C1_PIXELS))
    before = (folder / "homography-c1.txt").read_text()
    status, answer = post_json(f"{url}/api/calibration/c1/save", body)
    assert status == 409 and "replace" in answer["error"]
    assert (folder / "homography-c1.txt").read_text() == before
    status, answer = post_json(f"{url}/api/calibration/c1/save", points_body(
        C1_PIXELS, ground_of(truth, C1_PIXELS), replace=True))
    assert status == 200 and answer["saved"] and answer["replaced"], answer
    assert Path(answer["path"]) == folder / "homography-c1.txt"
    assert max_map_difference(Homography.load(answer["path"]), truth) < 1e-3
    saved = read_points_csv(folder / "calibration-c1.csv")
    assert np.allclose([(p.u, p.v) for p in saved], C1_PIXELS)
    assert answer["config_lines"] == "cameras:\n  - id: c1\n    homography: homography-c1.txt\n"
    assert "already reads homography-c1.txt" in answer["config_note"]
    assert "ground_offset" not in answer["config_note"]
    # An offset measured against the previous calibration no longer fits the new one: the note says so.
    config = folder / "cams.yaml"
    text = config.read_text()
    config.write_text(text.replace("homography: homography-c1.txt\n", "homography: homography-c1.txt\n"
                                                                        "    ground_offset: [0.1, -0.05]\n"))
    try:
        status, answer = post_json(f"{url}/api/calibration/c1/save", points_body(
            C1_PIXELS, ground_of(truth, C1_PIXELS), replace=True))
    finally:
        config.write_text(text)
    assert status == 200 and "ground_offset [0.1, -0.05], measured against its previous calibration" in \
        answer["config_note"], answer
    cams = {c["id"]: c for c in get_json(f"{url}/api/calibration")[1]["cameras"]}
    assert len(cams["c1"]["points"]) == 6 and cams["c1"]["file_exists"]


def test_floor_plan_upload_is_checked(site):
    url, folder = site
    body, headers = multipart({"pixels_per_metre": "50"}, {"image": ("plan.png", b"not an image at all")})
    status, answer = get_json(f"{url}/api/calibration/floor_plan", data=body, headers=headers)
    assert status == 400
    assert answer["error"] == "plan.png: not an image this service reads (JPEG, PNG, BMP, WebP, GIF or TIFF)"
    # formats whose size the header check cannot read are refused rather than decoded blind (a few kilobytes of
    # JPEG 2000 decode to 9000 x 9000 px)
    ok, jp2 = cv2.imencode(".jp2", np.zeros((64, 64), np.uint8))
    if ok:
        body, headers = multipart({"pixels_per_metre": "50"}, {"image": ("plan.jp2", jp2.tobytes())})
        status, answer = get_json(f"{url}/api/calibration/floor_plan", data=body, headers=headers)
        assert status == 400 and "not an image this service reads" in answer["error"]
    body, headers = multipart({"pixels_per_metre": "50"}, {})
    status, answer = get_json(f"{url}/api/calibration/floor_plan", data=body, headers=headers)
    assert status == 400 and "no floor plan yet" in answer["error"]
    # a few kilobytes that would decode to 9000 x 9000 px: refused from the header, before decoding
    bomb = cv2.imencode(".png", np.zeros((9000, 9000), np.uint8))[1].tobytes()
    assert len(bomb) < 200_000
    body, headers = multipart({"pixels_per_metre": "50"}, {"image": ("huge.png", bomb)})
    status, answer = get_json(f"{url}/api/calibration/floor_plan", data=body, headers=headers)
    assert status == 400 and answer["error"] == "huge.png: 9000x9000 px, larger than 8192 px a side"
    plan = cv2.imencode(".png", np.full((300, 400, 3), 255, np.uint8))[1].tobytes()
    try:
        body, headers = multipart({"pixels_per_metre": "50", "origin_x": "20", "origin_y": "30"},
                                  {"image": ("plan.png", plan)})
        status, answer = get_json(f"{url}/api/calibration/floor_plan", data=body, headers=headers)
        assert status == 200 and answer["floor_plan"]["origin_px"] == [20, 30], answer
        assert answer["floor_plan"]["width"] == 400 and answer["floor_plan"]["pixels_per_metre"] == 50
        status, png, ctype = request(url + answer["floor_plan"]["url"])
        assert status == 200 and ctype == "image/png"
        body, headers = multipart({"pixels_per_metre": "-1"}, {})
        status, answer = get_json(f"{url}/api/calibration/floor_plan", data=body, headers=headers)
        assert status == 422 and "pixels_per_metre" in answer["error"]
    finally:
        (folder / "floor_plan.png").unlink(missing_ok=True)
        (folder / "floor_plan.json").unlink(missing_ok=True)


def test_an_unknown_camera_is_404(site):
    url, _ = site
    status, body = get_json(f"{url}/api/calibration/c9/frame.jpg")
    assert status == 404 and body == {"error": "no camera 'c9' (cameras: c0, c1)", "status": 404}
    ground = ground_of(shipped("c0"), C0_PIXELS)
    status, body = post_json(f"{url}/api/calibration/c9/fit", points_body(C0_PIXELS, ground))
    assert status == 404 and "no camera 'c9'" in body["error"]


def test_the_calibration_routes_need_the_token_and_refuse_other_sites(tmp_path, redis_server):  # noqa: F811 - the fixture
    store = IdentityStore.from_config(MatcherConfig(), redis_server.url)
    site = CalibrationSite([SiteCamera("c0", str(TERRACE / "terrace1-c0.mp4"), False, None)], tmp_path, None)
    ctx = ServiceContext(HttpConfig(token="s3cret", port=0), store, Album(store), [{"id": "c0", "live": False}],
                         tmp_path, None, make_embedder=lambda: None, calibration=site)
    service = ServiceThread(create_app(ctx), "127.0.0.1", 0).start()
    try:
        for path in ("/api/calibration", "/api/calibration/c0/frame.jpg"):
            status, body = get_json(service.url + path)
            assert status == 401 and "bearer token" in body["error"], path
            assert request(service.url + path, headers={"Authorization": "Bearer s3cret"})[0] == 200, path
            # the pages' cookie (an <img> sends no header); a wrong one is refused
            assert request(service.url + path, headers={"Cookie": "reid_token=s3cret"})[0] == 200, path
            assert request(service.url + path, headers={"Cookie": "reid_token=guess"})[0] == 401, path
        for path in ("/calibrate", "/", "/static/auth.js"):  # the pages hold no data: they ask for the token
            assert request(service.url + path)[0] == 200, path
        # a POST from another site's page is refused, token or not; one from the service's own page is not
        body = points_body(C0_PIXELS[:4], ground_of(shipped("c1"), C1_PIXELS[:4]))
        auth = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
        status, answer = get_json(f"{service.url}/api/calibration/c0/fit", data=body,
                                  headers={**auth, "Origin": "http://evil.example"})
        assert status == 403 and "cross-site" in answer["error"]
        host = service.url.removeprefix("http://")
        assert get_json(f"{service.url}/api/calibration/c0/fit", data=body,
                        headers={**auth, "Origin": service.url, "Host": host})[0] == 200
        status, answer = get_json(f"{service.url}/api/calibration/c0/fit", data=body,
                                  headers={**auth, "Origin": "http://[::1"})  # not even a URL: refused, no 500
        assert status == 403 and "cross-site" in answer["error"]
    finally:
        service.stop()
        store.close()


# -- the site without HTTP -----------------------------------------------------------------------------------------


def test_the_config_lines_make_a_config_that_loads_and_without_a_folder_a_save_is_a_download(tmp_path):
    cams = [SiteCamera("c0", str(TERRACE / "terrace1-c0.mp4"), False, None)]
    ground = ground_of(shipped("c0"), C0_PIXELS)
    fit = fit_homography([PointPair(u, v, x, y, n)
                          for n, ((u, v), (x, y)) in enumerate(zip(C0_PIXELS, ground, strict=True), 1)])
    answer = CalibrationSite(cams, tmp_path, None).save("c0", fit, replace=False)
    assert not answer["saved"] and set(answer["download"]) == {"homography-c0.txt", "calibration-c0.csv"}
    assert answer["config_lines"].endswith("geometry:\n  units: m\n")
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(f"cameras:\n  - id: c0\n    source: {TERRACE / 'terrace1-c0.mp4'}\n")
    answer = CalibrationSite(cams, tmp_path, cfg).save("c0", fit, replace=False)
    assert answer["saved"] and answer["config_lines"] == (
        "cameras:\n  - id: c0\n    homography: homography-c0.txt\ngeometry:\n  units: m\n")
    assert "add the homography line to camera c0's entry" in answer["config_note"]
    assert "no geometry section" in answer["config_note"]
    # pasted as the page says: the homography line into c0's entry, the geometry section added
    cfg.write_text(cfg.read_text() + "    homography: homography-c0.txt\ngeometry:\n  units: m\n")
    config = load_config(cfg)
    assert np.allclose(config.cameras[0].homography, fit.matrix) and config.geometry.same_place == 0.3


def test_frames_come_from_the_snapshot_at_the_camera_s_own_size(tmp_path):
    """A recorded camera's frame is the snapshot's frame read from its video (full size); a live camera's is the
    snapshot's downscaled JPEG, its points still in the camera's own pixels: the top views of both agree."""
    video = str(TERRACE / "terrace1-c0.mp4")
    big = cv2.resize(read_source_frame(video, 100), (1440, 1152))  # a camera wider than a snapshot keeps
    writer = SnapshotWriter(snapshot_folder(tmp_path), every_s=60)
    writer.write("rec", 100, 4.0, big, np.zeros((0, 4)), [])
    writer.write("live", 100, 4.0, big, np.zeros((0, 4)), [])
    site = CalibrationSite([SiteCamera("rec", video, False, None), SiteCamera("live", "rtsp://cam/1", True, None),
                            SiteCamera("idle", "rtsp://cam/2", True, None)], tmp_path, None)
    recorded, live = site.frame("rec"), site.frame("live")
    assert (recorded.width, recorded.image.shape[1], recorded.origin) == (360, 360, "frame 100 of terrace1-c0.mp4")
    assert (live.width, live.height, live.image.shape[1], live.scale) == (1440, 1152, 480, 1 / 3)
    with pytest.raises(FrameError, match="camera idle: no frame yet"):
        site.frame("idle")
    ground = ground_of(shipped("c0"), C0_PIXELS)

    def fitted(frame: CameraFrame, zoom: float) -> dict:
        pairs = [PointPair(u * zoom, v * zoom, x, y, n)
                 for n, ((u, v), (x, y)) in enumerate(zip(C0_PIXELS, ground, strict=True), 1)]
        return fit_json("c0", frame, fit_homography(pairs))["top_view"]

    small, large = fitted(recorded, 1), fitted(live, 4)
    assert large["bounds"] == pytest.approx(small["bounds"]) and (large["width"], large["height"]) == (
        small["width"], small["height"])
    grey = [cv2.imdecode(np.frombuffer(base64.b64decode(v["image"].split(",", 1)[1]), np.uint8),
                         cv2.IMREAD_GRAYSCALE).astype(float) for v in (small, large)]
    assert np.abs(grey[0] - grey[1]).mean() < 10  # grey levels: the same floor, resampled


def test_the_top_view_leaves_the_ground_beyond_the_horizon_black():
    h = Homography([[1.0, 0, 0], [0, 1.0, 0], [0, 0.01, -0.3]])  # horizon at v = 30: rows below it are floor
    image = np.full((100, 100, 3), 200, np.uint8)
    # The floor (rows 30 to 100) lies at ground y >= 143; rows above the horizon would map ground y <= 0 onto the
    # sky, mirrored, if the warp were left alone.
    view = top_view(image, h, (0.0, -100.0, 100.0, 300.0), 400)
    assert view.shape[:2] == (400, 100)
    assert view[:100].max() == 0 and view[100:243].max() == 0
    assert (view[250:, 50] == 200).all()  # ground y >= 150: rows 89 up to 45 of the frame


# -- the page in a real browser --------------------------------------------------------------------------------


def open_camera(driver, wait, url: str, camera: str):  # noqa: ANN001, ANN201 - selenium objects
    """The calibration page with ``camera`` picked; returns its frame image once the frame has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/calibrate")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#camera-select option"))
    Select(driver.find_element(By.ID, "camera-select")).select_by_value(camera)
    frame = driver.find_element(By.ID, "frame")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", frame) == 360)
    return frame


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium and chromedriver are not installed "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
def test_calibrating_a_camera_in_a_headless_browser(site):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, folder = site
    truth = shipped("c0")
    # the six points, and a seventh typed with a slip of 1.5 m in y: as a user types them, to the centimetre
    pixels = [*C0_PIXELS, (300.0, 215.0)]
    typed = np.round(ground_of(truth, pixels), 2) + np.array([[0, 0]] * 6 + [[0, 1.5]])
    driver = headless_chrome()
    wait = WebDriverWait(driver, 20)

    def rows() -> list:
        return driver.find_elements(By.CSS_SELECTOR, "#points .point-row")

    def click_and_type(k: int) -> None:
        """Click pixels[k] on the displayed frame, then type its ground position."""
        left, top, width, height = rect
        u, v = pixels[k]
        # Selenium 4 offsets are from the element's centre, in whole CSS pixels
        dx, dy = round(u * width / 360 - width / 2), round(v * height / 288 - height / 2)
        ActionChains(driver).move_to_element_with_offset(frame, dx, dy).click().perform()
        wait.until(lambda d: len(rows()) == k + 1)
        row = rows()[k]
        row.find_element(By.CSS_SELECTOR, "input.x").send_keys(f"{typed[k][0]:.2f}")
        row.find_element(By.CSS_SELECTOR, "input.y").send_keys(f"{typed[k][1]:.2f}")
        # what the page recorded: the aimed natural pixel, within what a click can miss it by (plus the page's
        # 0.1 px rounding)
        recorded = [float(c.text) for c in row.find_elements(By.CSS_SELECTOR, "td")[1:3]]
        assert np.abs(np.subtract(recorded, pixels[k])).max() <= miss_px + 0.06, (recorded, pixels[k])

    try:
        frame = open_camera(driver, wait, url, "c0")
        rect = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                     "return [r.left, r.top, r.width, r.height]", frame)
        # A click misses the aimed point by up to 1.5 displayed pixels: half from rounding the offset to whole
        # pixels, one from WebDriver placing the element's centre on a whole pixel. In natural pixels:
        miss_px = 1.5 * 360 / rect[2]
        for k in range(4):
            click_and_type(k)
        wait.until(lambda d: "4 of 4 points used" in d.find_element(By.ID, "fit-summary").text)
        assert driver.find_element(By.ID, "replace-note").text == "writes homography-c0.txt next to the config"
        driver.find_element(By.ID, "save").click()
        wait.until(lambda d: d.find_elements(By.ID, "saved-path"))
        saved = Path(driver.find_element(By.ID, "saved-path").text)
        assert saved == folder / "homography-c0.txt"
        assert "homography: homography-c0.txt" in driver.find_element(By.ID, "config-lines").text

        # The written matrix maps the aimed pixels to the typed positions, within what a click can miss by
        # (and the page's 0.1 px rounding) through the matrix's local scale: four points fit exactly.
        h = Homography.load(saved)
        for (u, v), xy in zip(C0_PIXELS[:4], typed[:4], strict=True):
            g = h.project(np.array([[u, v], [u + 1, v], [u, v + 1]]))[0]
            metres_per_px = np.linalg.norm(g[1:] - g[0], axis=1).sum()
            assert np.linalg.norm(g[0] - xy) <= metres_per_px * (miss_px + 0.06) + 1e-6, (u, v, g[0], xy)

        # Two more points: the errors now mean something. A seventh, mistyped, is left out (and shown so).
        wait.until(lambda d: d.find_element(By.ID, "replace-note").text == "will replace homography-c0.txt")
        for k in (4, 5):
            click_and_type(k)
        wait.until(lambda d: "6 of 6 points used" in d.find_element(By.ID, "fit-summary").text)
        assert all(e.text.endswith(("cm", "px")) for e in driver.find_elements(By.CSS_SELECTOR, ".point-error"))
        click_and_type(6)
        wait.until(lambda d: "6 of 7 points used" in d.find_element(By.ID, "fit-summary").text)
        assert "left out: 7" in driver.find_element(By.ID, "fit-summary").text
        outliers = [i for i, r in enumerate(rows()) if "outlier" in r.get_attribute("class").split()]
        assert outliers == [6] and rows()[6].find_element(By.CSS_SELECTOR, ".point-error.image").text.endswith(
            "left out")

        # Saved again over the first (the page said it would): all seven points, the fit of the six.
        driver.find_element(By.ID, "save").click()
        wait.until(lambda d: "previous calibration replaced" in d.find_element(By.ID, "save-message").text)
        assert len(read_points_csv(folder / "calibration-c0.csv")) == 7
        # clicks within a displayed pixel and positions typed to the centimetre: within 10 cm up to mid-frame
        assert max_map_difference(Homography.load(saved), truth) < 0.1
        wait.until(lambda d: d.execute_script("return document.getElementById('top-view').naturalWidth") > 0)
        (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
        assert driver.save_screenshot(str(PROJECT_ROOT / "docs" / "calibration_page.png"))
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium and chromedriver are not installed "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
def test_a_click_on_the_floor_plan_gives_the_selected_point_its_ground_position(site, tmp_path):
    """Upload a plan (50 px per metre, ground (0, 0) at plan pixel (20, 30)), click a floor point on the frame,
    then click the plan where ground (2, 1.5) lies: the point's x, y are that, within a displayed pixel."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, folder = site
    plan_file = tmp_path / "plan.png"
    cv2.imwrite(str(plan_file), np.full((300, 400, 3), 235, np.uint8))
    ppm, origin, target = 50.0, (20.0, 30.0), (2.0, 1.5)
    driver = headless_chrome()
    wait = WebDriverWait(driver, 20)
    try:
        frame = open_camera(driver, wait, url, "c0")
        driver.find_element(By.CSS_SELECTOR, "#floor-plan-section summary").click()
        driver.find_element(By.ID, "plan-file").send_keys(str(plan_file))
        for field, value in (("plan-ppm", ppm), ("plan-origin-x", origin[0]), ("plan-origin-y", origin[1])):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(f"{value:g}")
        driver.find_element(By.CSS_SELECTOR, "#floor-plan-form button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.ID, "ground-caption").text.startswith("Floor plan"))
        before = len(driver.find_elements(By.CSS_SELECTOR, "#points .point-row"))
        ActionChains(driver).move_to_element_with_offset(frame, 10, 40).click().perform()  # a new, selected point
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#points .point-row")) == before + 1)
        canvas = driver.find_element(By.ID, "ground")
        width, height = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                              "return [r.width, r.height]", canvas)
        k = width / 400  # displayed pixels per plan pixel
        px, py = origin[0] + ppm * target[0], origin[1] + ppm * target[1]
        ActionChains(driver).move_to_element_with_offset(canvas, round(px * k - width / 2),
                                                         round(py * k - height / 2)).click().perform()
        row = driver.find_elements(By.CSS_SELECTOR, "#points .point-row")[-1]
        wait.until(lambda d: row.find_element(By.CSS_SELECTOR, "input.x").get_attribute("value") != "")
        got = [float(row.find_element(By.CSS_SELECTOR, f"input.{c}").get_attribute("value")) for c in "xy"]
        # a click lands within 1.5 displayed pixels of the aim (see the test above); the page rounds to 1 cm
        assert np.abs(np.subtract(got, target)).max() <= 1.5 / k / ppm + 0.006, got
    finally:
        driver.quit()
        (folder / "floor_plan.png").unlink(missing_ok=True)
        (folder / "floor_plan.json").unlink(missing_ok=True)
