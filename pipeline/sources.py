"""Frame sources: video files, image folders, RTSP/HTTP streams and USB cameras behind one iterator.

Each source yields ``(frame_index, video_ts, frame)`` with BGR uint8 frames. Recorded sources carry video time
(frame index / fps); live sources carry capture time (wall clock). A live stream that drops reconnects with
exponential backoff instead of ending; a file that cannot be opened or yields no frame is a clear error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from reid.paths import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

Frame = tuple[int, float, np.ndarray]


class SourceError(RuntimeError):
    """A camera source that cannot be read; the message names it."""


def probe_video(path: str | Path) -> tuple[float, int]:
    """(fps, frame count) of a readable video file; raises :class:`SourceError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise SourceError(f"{path}: cannot open video (corrupt, truncated or unsupported format)")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise SourceError(f"{path}: video holds no readable frame (corrupt or truncated)")
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


def is_video_file(camera) -> bool:
    """True for a camera that plays a recorded video file (not a live stream, not an image folder): the only
    kind ``--save-video`` can render, and a stream that ends."""
    return not camera.is_live and not Path(str(camera.source)).is_dir()


def probe_size(source: str | Path) -> tuple[int, int] | None:
    """(width, height) of a video file, stream or image folder's frames (a folder: its first readable image in
    name order, as :func:`folder_frames` plays it), None when it cannot be read."""
    if Path(str(source)).is_dir():
        for path in sorted(p for p in Path(str(source)).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            image = cv2.imread(str(path))
            if image is not None:
                return image.shape[1], image.shape[0]
        return None
    cap = cv2.VideoCapture(str(source))
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return (w, h) if w > 0 and h > 0 else None


def camera_fps(camera) -> float:
    """Frame rate of a camera's source: the config's, else the file's, else 25 (live) or 1 (image folder)."""
    if camera.fps:
        return camera.fps
    if camera.is_live:
        return 25.0
    path = Path(str(camera.source))
    return 1.0 if path.is_dir() else (probe_video(path)[0] or 25.0)


def camera_stride(camera, video_fps: float) -> int:
    """Frames between two detected frames: the config's ``frame_stride``, else ``video_fps / detect_fps``."""
    if camera.frame_stride:
        return camera.frame_stride
    return max(1, round(video_fps / camera.detect_fps)) if camera.detect_fps else 1


def detect_rate(camera) -> float:
    """Frames the detector runs on per second of a camera's video: the rate its tracker counts in."""
    fps = camera_fps(camera)
    return fps / camera_stride(camera, fps)


def video_frames(path: str | Path, stride: int = 1, start_frame: int = 0, fps: float | None = None,
                 max_ts: float | None = None) -> Iterator[Frame]:
    """Every ``stride``-th frame of a video file from ``start_frame``; video time from the frame index."""
    path = Path(path)
    file_fps, count = probe_video(path)
    fps = fps or file_fps or 25.0
    cap = cv2.VideoCapture(str(path))
    index = 0
    try:
        if start_frame:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
            index = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
        while True:
            if (index - start_frame) % stride:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            ts = index / fps
            if max_ts is not None and ts >= max_ts:
                return
            yield index, ts, frame
            index += 1
    finally:
        cap.release()
    if count and index < count - stride:
        log.warning("%s: ended at frame %d of %d (truncated or corrupt file?)", path, index, count)


def folder_frames(path: str | Path, stride: int = 1, start_frame: int = 0, fps: float = 1.0,
                  max_ts: float | None = None) -> Iterator[Frame]:
    """Images of a folder in name order, one frame each; an unreadable image is skipped with a warning."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"{path}: image folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for index in range(start_frame, len(files), stride):
        ts = index / fps
        if max_ts is not None and ts >= max_ts:
            return
        frame = cv2.imread(str(files[index]))
        if frame is None:
            log.warning("%s: unreadable image skipped", files[index])
            continue
        yield index, ts, frame


def redact(source: str | int) -> str:
    """The source as it may appear in logs: a URL's password (``rtsp://user:secret@host``) is masked."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(source))


def open_stream(source: str | int, timeout_s: float) -> cv2.VideoCapture:
    """Open a live source. Network streams go through FFmpeg with open and read timeouts, so a camera that stops
    sending makes ``read()`` fail after ``timeout_s`` instead of blocking the stage for good."""
    if isinstance(source, int):
        return cv2.VideoCapture(source)
    ms = int(timeout_s * 1000)
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])


def stream_frames(source: str | int, stride: int = 1, should_stop: Callable[[], bool] = lambda: False,
                  backoff_s: tuple[float, float] = (0.5, 30.0), max_ts: float | None = None,
                  read_timeout_s: float = 5.0) -> Iterator[Frame]:
    """A live stream (RTSP/HTTP URL or USB index): capture time stamps; when it is unreachable, stalls (no frame
    for ``read_timeout_s``) or drops, it is reopened after a wait that doubles from ``backoff_s[0]`` up to
    ``backoff_s[1]`` and resets once frames flow again. Frame indices keep counting across reconnections."""
    delay = backoff_s[0]
    index = 0
    t0 = time.time()
    name = redact(source)
    while not should_stop():
        cap = open_stream(source, read_timeout_s)
        if not cap.isOpened():
            cap.release()
            log.warning("camera %s unreachable; retrying in %.1f s", name, delay)
            _sleep(delay, should_stop)
            delay = min(delay * 2, backoff_s[1])
            continue
        log.info("camera %s connected", name)
        try:
            while not should_stop():
                ok, frame = cap.read()
                if not ok or frame is None:
                    log.warning("camera %s stalled or dropped; reconnecting in %.1f s", name, delay)
                    break
                delay = backoff_s[0]
                if index % stride == 0:
                    ts = time.time()
                    if max_ts is not None and ts - t0 >= max_ts:
                        return
                    yield index, ts, frame
                index += 1
        finally:
            cap.release()
        _sleep(delay, should_stop)
        delay = min(delay * 2, backoff_s[1])


def _sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not should_stop():
        time.sleep(min(0.1, end - time.monotonic()))
