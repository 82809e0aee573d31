"""Person detection throughput: frames/s of YOLO detection, and of detection + ByteTrack, on the shared clips.

    python benchmarks/detect_throughput.py [--device cpu] [--frames 30] [--repeats 3] [--json]

Clips: EPFL campus4 view 0 (360x288), its three views batched as one call (the detector serving three
cameras), and the indoor walk (768x432). Weights: both shared exports, each at its own fixed input size.
Frames are decoded before timing. Each row runs the clip's frames ``--repeats`` times (a fresh tracker each
time; passes of all rows interleaved, so a busy machine slows them alike), drops the first calls of each pass
as warm-up, and reports the median and p90 latency of one call (one frame, or one frame per camera), the
median time of the tracker updates in it, frames/s at the median, and the ratio to the baseline row of the
same clip (yolov8n_int8 640, detection only) measured in the same run on the same device.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detectors.tracking import CameraTracker  # noqa: E402
from detectors.yolo import ULTRALYTICS_VERSION, PersonDetector  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import shared_root  # noqa: E402

WEIGHTS = ("yolov8n_int8.onnx", "yolo11n_int8_320.onnx")
BASELINE = WEIGHTS[0]
WARMUP_CALLS = 3


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{model}, {os.cpu_count()} cores"


def read_frames(path: Path, start: int, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(start):
            cap.grab()
        frames = [cap.read()[1] for _ in range(count)]
    finally:
        cap.release()
    if any(f is None for f in frames):
        raise SystemExit(f"{path}: could not decode frames {start}..{start + count - 1}")
    return frames


def clips(n: int) -> dict[str, tuple[list[list[np.ndarray]], float]]:
    """name -> (calls, fps): each call is the list of frames handed to one ``detect``."""
    video = shared_root() / "video"
    epfl = [read_frames(video / "epfl_campus4" / f"campus4-c{c}.mp4", 1000, n) for c in range(3)]
    indoor = read_frames(video / "indoor_walk" / "one-by-one-person-detection.mp4", 760, n)
    return {
        "epfl c0 360x288": ([[f] for f in epfl[0]], 25.0),
        "epfl c0-c2 x3 batch": ([list(fs) for fs in zip(*epfl, strict=True)], 25.0),
        "indoor 768x432": ([[f] for f in indoor], 10.0),
    }


class Row:
    """One table row: a detector on a clip, with or without tracking; ``run_pass`` times one pass over the clip."""

    def __init__(self, detector: PersonDetector, weights: str, clip: str, calls: list[list[np.ndarray]],
                 fps: float, tracker: str | None, device: str):
        self.detector, self.weights, self.clip, self.calls, self.fps = detector, weights, clip, calls, fps
        self.tracker, self.device = tracker, device
        self.times: list[float] = []
        self.track_times: list[float] = []

    @property
    def mode(self) -> str:
        return f"detect+{self.tracker}" if self.tracker else "detect"

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def run_pass(self) -> None:
        n_cams = len(self.calls[0])
        trackers = [CameraTracker(f"cam{c}", kind=self.tracker, frame_rate=self.fps) for c in range(n_cams)] \
            if self.tracker else []
        times, track_times = [], []
        for i, frames in enumerate(self.calls):
            self._sync()
            t0 = time.perf_counter()
            dets = self.detector.detect(frames)
            self._sync()
            t1 = time.perf_counter()
            for tracker, frame, d in zip(trackers, frames, dets, strict=False):
                tracker.update(frame, i, i / self.fps, d)
            t2 = time.perf_counter()
            times.append(t2 - t0)
            track_times.append(t2 - t1)
        self.times += times[WARMUP_CALLS:]
        self.track_times += track_times[WARMUP_CALLS:]

    def result(self) -> dict:
        med = statistics.median(self.times)
        return {"weights": self.weights, "input": self.detector.imgsz, "clip": self.clip, "mode": self.mode,
                "median_ms": 1e3 * med, "p90_ms": 1e3 * float(np.percentile(self.times, 90)),
                "track_ms": 1e3 * statistics.median(self.track_times) if self.tracker else None,
                "fps": len(self.calls[0]) / med, "calls": len(self.times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/detect_throughput.py", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--frames", type=int, default=30, help="consecutive frames per clip (per camera)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the frames per row")
    p.add_argument("--tracker", default="bytetrack", choices=["bytetrack", "botsort"])
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)

    data = clips(args.frames)
    rows = []
    for weights in WEIGHTS:
        detector = PersonDetector(shared_root() / "weights" / weights, device=args.device)
        for clip, (calls, fps) in data.items():
            for tracker in (None, args.tracker):
                rows.append(Row(detector, weights, clip, calls, fps, tracker, args.device))
    for _ in range(args.repeats):  # passes interleave the rows, so load from other processes hits them alike
        for row in rows:
            row.run_pass()
    results = [row.result() for row in rows]
    base = {r["clip"]: r["fps"] for r in results if r["weights"] == BASELINE and r["mode"] == "detect"}
    for r in results:
        r["ratio"] = r["fps"] / base[r["clip"]]
    header = (f"Person detection throughput on {device_name(args.device)} ({args.device}; torch {torch.__version__}, "
              f"ultralytics {ULTRALYTICS_VERSION}); {args.frames} frames x {args.repeats} interleaved passes per row, "
              f"{WARMUP_CALLS} warm-up calls per pass dropped; baseline = {BASELINE} detect on the same clip, "
              f"same run; latency and track ms are per call (one frame per camera)")
    if args.json:
        print(json.dumps({"device": device_name(args.device), "header": header, "rows": results}))
        return 0
    print(header)
    print(f"{'weights':<23}{'input':>6}  {'clip':<21}{'mode':<18}{'median ms':>10}{'p90 ms':>9}{'track ms':>9}"
          f"{'fps':>8}{'ratio':>7}")
    for r in results:
        track = f"{r['track_ms']:>9.1f}" if r["track_ms"] is not None else f"{'-':>9}"
        print(f"{r['weights']:<23}{r['input']:>6}  {r['clip']:<21}{r['mode']:<18}{r['median_ms']:>10.1f}"
              f"{r['p90_ms']:>9.1f}{track}{r['fps']:>8.1f}{r['ratio']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
