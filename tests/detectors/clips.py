"""The stretches of the shared videos that the detector tests use, and a decoder for just those frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

INDOOR = "video/indoor_walk/one-by-one-person-detection.mp4"
EPFL_C0 = "video/epfl_campus4/campus4-c0.mp4"
# One person enters bottom-left at ~745, stands mid-room, leaves right at ~866; nobody else until ~926.
INDOOR_CROSSING = (740, 885)
INDOOR_FPS = 10.0


def read_frames(path: Path, start: int, stop: int) -> list[np.ndarray]:
    """Frames ``start..stop-1`` of a video, decoding from the start (seeking H.264 is not frame-exact)."""
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(start):
            if not cap.grab():
                raise ValueError(f"{path}: fewer than {start} frames")
        frames = []
        for i in range(start, stop):
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"{path}: no frame {i}")
            frames.append(frame)
        return frames
    finally:
        cap.release()
