"""Where the person detector loses people in a crowd, and what a bigger input or other thresholds buy.

    python benchmarks/detect_recall.py [--clip epfl_terrace1_crowd] [--repeats 3]

Runs each detector setting on the frames the pipeline detects (every 5th frame: 5 detections/s) of both views of
an annotated EPFL terrace1 clip and matches its boxes to the ground truth one-to-one at IoU 0.5. Recall is split by
what makes a person hard to find:

- occluded: another ground-truth box covers more than 30 % of the person's box;
- small: the box is lower than a third of the frame's height;
- edge: the box touches the frame's border (within 2 % of its size);
- clear: none of these.

One table; ms/frame is the median over ``--repeats`` passes of the detector alone (both views, batched as the
detect stage does), ratio = this row's ms / the first row's (the shipped setting).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detectors.yolo import PersonDetector  # noqa: E402
from pipeline.evaluate_mtmc import MotSequence, match_boxes, read_mot  # noqa: E402
from reid.identity.geometry import box_intersections  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import shared_root  # noqa: E402
from tests.detectors.clips import read_frames  # noqa: E402

STRIDE = 5
OCCLUDED = 0.3  # share of the box covered by another person's box
SMALL = 1 / 3  # box height under this share of the frame's height
EDGE = 0.02  # box within this share of the frame's size from its border


def hardness(gt: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per ground-truth box (xyxy): occluded, small, edge, clear."""
    h, w = shape[:2]
    inter, area, _ = box_intersections(gt, gt)
    covered = inter / np.maximum(area[:, None], 1e-9)
    np.fill_diagonal(covered, 0.0)
    occluded = covered.max(axis=1, initial=0.0) > OCCLUDED
    small = (gt[:, 3] - gt[:, 1]) < SMALL * h
    edge = (gt[:, 0] <= EDGE * w) | (gt[:, 1] <= EDGE * h) | (gt[:, 2] >= (1 - EDGE) * w) | (gt[:, 3] >= (1 - EDGE) * h)
    return {"occluded": occluded, "small": small, "edge": edge, "clear": ~(occluded | small | edge)}


def found(gt: np.ndarray, det: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Which ground-truth boxes (xyxy) a detection matches (one-to-one, best IoU first)."""
    hit = np.zeros(len(gt), bool)
    hit[match_boxes(gt, det, iou, box_format="x0y0x1y1")[0]] = True
    return hit


def score(detector: PersonDetector, views: dict[str, list[np.ndarray]], gt: dict[str, MotSequence],
          repeats: int) -> dict:
    counts: dict[str, list[int]] = {k: [0, 0] for k in ("all", "occluded", "small", "edge", "clear")}
    dets_total = dets_true = 0
    cams = sorted(views)
    times = []
    for rep in range(repeats):
        t0 = time.perf_counter()
        per_frame = [detector.detect([views[c][k] for c in cams]) for k in range(len(views[cams[0]]))]
        times.append(1e3 * (time.perf_counter() - t0) / (len(per_frame) * len(cams)))
        if rep:
            continue
        for k, dets in enumerate(per_frame):
            for cam, d in zip(cams, dets, strict=True):
                _, boxes = gt[cam].at(STRIDE * k + 1)
                g = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1) if len(boxes) else \
                    np.zeros((0, 4))
                hit = found(g, d.xyxy.astype(np.float64))
                dets_total += len(d)
                dets_true += int(hit.sum())
                groups = hardness(g, views[cam][k].shape)
                groups["all"] = np.ones(len(g), bool)
                for name, mask in groups.items():
                    counts[name][0] += int(hit[mask].sum())
                    counts[name][1] += int(mask.sum())
    return {"recall": {k: (h / n if n else float("nan"), n) for k, (h, n) in counts.items()},
            "precision": dets_true / dets_total if dets_total else float("nan"), "ms": statistics.median(times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/detect_recall.py", description=__doc__.split("\n")[0])
    p.add_argument("--clip", default="epfl_terrace1_crowd", help="folder under ../shared/video with gt/")
    p.add_argument("--seconds", type=float, default=30.0, help="first S seconds of the clip")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    setup_logging(30)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    root = shared_root() / "video" / args.clip
    weights = shared_root() / "weights"
    views = {c: read_frames(root / f"terrace1-{c}.mp4", 0, int(25 * args.seconds))[::STRIDE] for c in ("c0", "c1")}
    gt = {c: read_mot(root / "gt" / f"{c}.txt") for c in views}
    # (weights, confidence, NMS IoU): the shipped setting first
    settings = [("yolo11n_int8_320.onnx", 0.35, 0.45), ("yolo11n_int8_320.onnx", 0.25, 0.45),
                ("yolo11n_int8_320.onnx", 0.35, 0.6), ("yolo11n_int8_320.onnx", 0.35, 0.7),
                ("yolov8n_int8.onnx", 0.35, 0.45), ("yolov8n_int8.onnx", 0.35, 0.6)]
    rows = []
    for name, conf, iou in settings:
        detector = PersonDetector(weights / name, conf=conf, iou=iou)
        rows.append((name, conf, iou, score(detector, views, gt, args.repeats)))
    base = rows[0][3]["ms"]
    print(f"Person detection on {args.clip} (both views, every {STRIDE}th frame, {args.seconds:.0f} s), recall at "
          f"IoU 0.5 by kind of person (count in brackets); {platform.machine()} CPU x{os.cpu_count()}, ms/frame "
          f"median of {args.repeats}; ratio = ms / the first row's (shipped)")
    kinds = ("all", "clear", "occluded", "small", "edge")
    head = f"{'weights':<24}{'conf':>5}{'NMS':>5}" + "".join(f"{k:>16}" for k in kinds)
    print(head + f"{'precision':>11}{'ms':>8}{'ratio':>7}")
    for name, conf, iou, r in rows:
        cells = "".join(f"{r['recall'][k][0]:>9.3f} ({r['recall'][k][1]:>4})" for k in kinds)
        print(f"{name:<24}{conf:>5.2f}{iou:>5.2f}{cells}{r['precision']:>11.3f}{r['ms']:>8.1f}{r['ms'] / base:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
