"""Camera sources against real streams: a network camera that is off, then hangs, then comes back; a recorded
camera that ends before the others."""

from __future__ import annotations

import logging
import re
import threading

import cv2
import numpy as np
import pytest

from pipeline.sources import probe_size, redact, stream_frames
from pipeline.supervisor import Supervisor

from .conftest import free_port
from .mjpeg_server import MjpegCamera


@pytest.fixture(scope="module")
def jpegs(shared) -> list[bytes]:
    cap = cv2.VideoCapture(str(shared / "video" / "epfl_campus4" / "campus4-c0.mp4"))
    frames = [cap.read()[1] for _ in range(10)]
    cap.release()
    return [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]


def test_live_camera_off_then_hung_reconnects_with_backoff(jpegs, caplog):
    camera = MjpegCamera(jpegs, free_port(), stall_after=20)
    switch_on = threading.Timer(1.2, camera.start)  # off at first: the source retries with growing waits
    switch_on.start()
    got = []
    try:
        with caplog.at_level(logging.INFO, logger="pipeline.sources"):
            for index, ts, frame in stream_frames(camera.url, backoff_s=(0.2, 0.5), read_timeout_s=1.0):
                got.append((index, ts, frame))
                if len(got) == 40:
                    break
    finally:
        switch_on.cancel()
        camera.stop()
    assert [g[0] for g in got] == list(range(40)), "frame indices run on across the reconnection"
    assert all(g[2].shape == (288, 360, 3) for g in got)
    waits = [float(w) for w in re.findall(r"unreachable; retrying in ([\d.]+) s", caplog.text)]
    assert len(waits) >= 3 and waits[:3] == [0.2, 0.4, 0.5], waits  # doubling, capped
    assert "stalled or dropped; reconnecting in 0.2 s" in caplog.text  # frames had flowed: the backoff reset
    assert camera.connections == 2
    # the hang shows as a gap of at least the read timeout between frames 19 and 20, nothing lost around it
    assert got[20][1] - got[19][1] >= 1.0 > max(got[i + 1][1] - got[i][1] for i in range(19))


def test_recorded_camera_that_ends_early_lets_the_others_go_on(make_config, tmp_path, shared):
    """c1 is a 3 s recording: it finishes (its END travels through every stage) and c0/c2 play on to the end."""
    src = cv2.VideoCapture(str(shared / "video" / "epfl_campus4" / "campus4-c1.mp4"))
    fps = src.get(cv2.CAP_PROP_FPS)
    short = tmp_path / "c1-short.mp4"
    out = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), fps, (360, 288))
    for _ in range(int(3 * fps)):
        out.write(src.read()[1])
    out.release()
    src.release()
    cfg = make_config("short", detect_fps=2.5)
    cams = [c.model_copy(update={"source": str(short)}) if c.id == "c1" else c for c in cfg.cameras]
    sup = Supervisor(cfg.model_copy(update={"cameras": cams}), replay=True, speed=None, duration_s=10.0,
                     status=False)
    assert sup.run() == 0
    sources = {p.stats["camera_id"]: p.stats["counters"]["frames"] for p in sup.procs
               if p.kind == "source"}
    match = next(p for p in sup.procs if p.kind == "match")
    assert set(match.stats["ended"]) == {"c0", "c1", "c2"}
    assert sources["c1"] < sources["c0"] == sources["c2"] == 25, sources  # c1 ran out after 3 s; 10 s at 2.5/s
    assert np.isfinite([e["video_ts"] for e in sup.events]).all()


def test_stream_passwords_never_reach_the_logs():
    assert redact("rtsp://admin:s3cr:et@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("http://10.0.0.5:8080/video.mjpg") == "http://10.0.0.5:8080/video.mjpg"
    assert redact(0) == "0"


def test_frame_size_of_an_image_folder_is_its_first_readable_image(tmp_path, shared):
    """The gap filler and the floor view need each calibrated view's image size, image folders included."""
    video = shared / "video" / "epfl_terrace1" / "terrace1-c0.mp4"
    assert probe_size(video) == (360, 288)
    (tmp_path / "0000.jpg").write_bytes(b"not a jpeg")  # skipped, as folder_frames skips it
    cv2.imwrite(str(tmp_path / "0001.jpg"), np.zeros((120, 200, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    assert probe_size(tmp_path) == (200, 120)
    assert probe_size(tmp_path / "missing") is None
