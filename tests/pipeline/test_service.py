"""The HTTP service and its web page against a real pipeline: the example config replayed at recorded pace (real
video, real ZeroMQ, the run's embedded Redis), the service started by ``run_pipeline.py --http``; plus the http
section's rules and the bearer token on a real server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.service.app import ServiceContext, create_app
from pipeline.service.config import HttpConfig, parse_listen
from pipeline.service.server import ServiceThread
from reid.identity.album import Album
from reid.identity.config import MatcherConfig
from reid.identity.store import IdentityStore
from reid.paths import PROJECT_ROOT
from tests.redis_server import redis_server, redis_url  # noqa: F401 - fixtures

from .conftest import EXAMPLE, free_port
from .http_client import get_json, request, upload

pytestmark = pytest.mark.slow


# -- the http section --------------------------------------------------------------------------------------------


def test_binding_beyond_loopback_needs_a_token(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(EXAMPLE.read_text() + "\nhttp:\n  host: 0.0.0.0\n  port: 8080\n")
    with pytest.raises(ConfigError, match="http: .*0.0.0.0 is reachable from other machines: set token"):
        load_config(cfg)
    monkeypatch.setenv("REID_TEST_HTTP_TOKEN", "s3cret")
    cfg.write_text(EXAMPLE.read_text() + "\nhttp:\n  host: 0.0.0.0\n  token_env: REID_TEST_HTTP_TOKEN\n")
    assert load_config(cfg).http.resolved_token() == "s3cret"
    assert HttpConfig().host == "127.0.0.1" and parse_listen("127.0.0.1:9000") == ("127.0.0.1", 9000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("localhost:http")


def test_every_request_needs_the_bearer_token(redis_url, tmp_path):  # noqa: F811 - the fixture
    store = IdentityStore.from_config(MatcherConfig(), redis_url)
    ctx = ServiceContext(HttpConfig(token="s3cret", port=0), store, Album(store), [{"id": "c0", "live": False}],
                         tmp_path, None, make_embedder=lambda: None)
    service = ServiceThread(create_app(ctx), "127.0.0.1", 0).start()
    try:
        status, body = get_json(f"{service.url}/api/identities")
        assert status == 401 and "bearer token" in body["error"]
        status, body = get_json(f"{service.url}/api/identities", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and body["total"] == 0
        assert get_json(f"{service.url}/healthz")[0] == 200  # health checks need no token
        auth = {"Authorization": "Bearer s3cret"}
        status, body = get_json(f"{service.url}/api/cameras/c9/snapshot.jpg", headers=auth)
        assert status == 404 and body == {"error": "no camera 'c9'", "status": 404}
    finally:
        service.stop()
        store.close()


# -- a real pipeline ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_service(tmp_path_factory):
    """run_pipeline.py --replay (recorded pace, 30 s of video) --http; yields the base URL once the service shows
    an identity with a thumbnail and a snapshot of every camera; SIGTERM at the end (the run drains and exits 0)."""
    tmp = tmp_path_factory.mktemp("service")
    cfg = tmp / "cams.yaml"
    text = EXAMPLE.read_text().replace("../../shared", str(Path(load_config(EXAMPLE).cameras[0].source).parents[2]))
    cfg.write_text(text.replace("tcp://127.0.0.1:5560", f"tcp://127.0.0.1:{free_port()}"))
    port = free_port()
    log = open(tmp / "pipeline.log", "w")
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "run_pipeline.py"), "--cameras", str(cfg), "--replay",
                             "--duration", "30", "--run-dir", str(tmp / "run"), "--no-status",
                             "--http", f"127.0.0.1:{port}"], cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp / "pipeline.log").read_text()[-3000:]
            try:
                ids = get_json(f"{url}/api/identities")[1]
                cams = get_json(f"{url}/api/cameras")[1]["cameras"]
                if any(i["thumbnails"] for i in ids["items"]) and all(c["snapshot"] for c in cams):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        else:
            pytest.fail("no identity with a thumbnail within 120 s:\n" + (tmp / "pipeline.log").read_text()[-3000:])
        yield url, tmp
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
    assert code == 0, (tmp / "pipeline.log").read_text()[-3000:]


def test_api_against_a_running_pipeline(pipeline_service):
    url, _ = pipeline_service
    status, health = get_json(f"{url}/healthz")
    assert status == 200 and health["status"] == "ok" and health["stages"]["match"]["alive"]

    status, page = get_json(f"{url}/api/identities?offset=0&limit=1")
    assert status == 200 and page["total"] >= 1 and len(page["items"]) == 1
    assert get_json(f"{url}/api/identities?limit=0")[0] == 422  # validation errors are JSON too
    item = next(i for i in get_json(f"{url}/api/identities")[1]["items"] if i["thumbnails"])
    status, ident = get_json(f"{url}/api/identities/{item['global_id']}")
    assert status == 200 and ident["timeline"]
    a = ident["timeline"][0]
    assert a["camera_id"] in {"c0", "c1", "c2"} and a["first_seen_ts"] <= a["last_seen_ts"]
    status, jpeg, ctype = request(f"{url}{ident['thumbnails'][0]}")
    crop = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and ctype == "image/jpeg" and crop is not None and max(crop.shape[:2]) <= 128

    status, found = upload(f"{url}/api/search?top=3", "crop.jpg", jpeg)  # an identity's own crop finds it first
    assert status == 200 and found["results"][0]["global_id"] == item["global_id"], found
    status, body = upload(f"{url}/api/search", "notes.txt", b"hello")
    assert status == 400 and "notes.txt: not an image" in body["error"]
    status, body = upload(f"{url}/api/search", "huge.jpg", b"\xff" * (5 * 1024 * 1024 + 10))
    assert status == 413 and "huge.jpg" in body["error"]

    for path in ("/api/identities/99999", "/api/identities/1/thumbnails/9.jpg", "/api/cameras/nope/snapshot.jpg",
                 "/api/nothing"):
        status, body = get_json(f"{url}{path}")
        assert status == 404 and body["error"], path

    status, jpeg, ctype = request(f"{url}/api/cameras/c0/snapshot.jpg")
    frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and frame.shape == (288, 360, 3)

    status, text, ctype = request(f"{url}/metrics")
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.decode().splitlines()
               if line and not line.startswith("#")}
    assert ctype.startswith("text/plain")
    assert metrics["reid_frames_read_total"] > 0 and metrics["reid_detections_total"] > 0
    assert metrics["reid_embeddings_total"] > 0 and metrics["reid_matches_total"] >= 1
    assert metrics["reid_identities"] >= 1 and metrics['reid_stage_restarts_total{stage="detect"}'] == 0
    assert metrics['reid_stage_latency_ms_count{stage="detect"}'] > 0
    assert 'reid_malformed_messages_total{stage="match"}' in metrics and "reid_dropped_frames_total" in metrics


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chrome(width: int = 1400, height: int = 900):  # noqa: ANN201 - a selenium WebDriver
    """Debian's chromium through its chromedriver, headless, its page (not its window) ``width`` x ``height``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # the window's size includes the browser's frame: set the page's own, as a screenshot shows it
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


@pytest.mark.skipif(chromium() is None, reason="chromium and chromedriver are not installed "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")
def test_web_page_in_a_headless_browser(pipeline_service):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, tmp = pipeline_service
    driver = headless_chrome()
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len([i for i in d.find_elements(By.CSS_SELECTOR, ".camera img")
                                  if d.execute_script("return arguments[0].naturalWidth", i) > 0]) == 3)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".identity img"))
        identity = driver.find_elements(By.CSS_SELECTOR, ".identity")[0]
        gid = identity.get_attribute("data-gid")
        identity.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline .appearance"))
        assert driver.find_element(By.ID, "timeline-title").text == f"Timeline of #{gid}"
        thumb = tmp / "photo.jpg"
        thumb.write_bytes(request(f"{url}/api/identities/{gid}/thumbnails/0.jpg")[1])
        driver.find_element(By.ID, "photo").send_keys(str(thumb))
        driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit"))
        hits = driver.find_elements(By.CSS_SELECTOR, "#hits .hit")
        assert hits[0].get_attribute("data-gid") == gid
        (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
        assert driver.save_screenshot(str(PROJECT_ROOT / "docs" / "web_page.png"))
    finally:
        driver.quit()
