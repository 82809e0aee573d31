"""The per-camera tracker alone at several detection rates, on the same detections: is a loss the rate's or luck's?

    python benchmarks/tracker_rates.py [--clips terrace1 crowd] [--rates 5 6.25 8.33 12.5 25] [--cache DIR]

The pipeline ties detection to tracking: replaying a clip at another ``detect_fps`` also changes which frames the
detector sees. Here the detector and the association embedder run once on every frame of each annotated terrace1
clip (``configs/terrace1.yaml``, ``configs/terrace1_crowd.yaml``); then the shipped per-camera tracker
(``pipeline.detect_stage.camera_tracker``: appearance and ground gate as configured) and the baseline tracker
(appearance and ground gate off) run on every ``25 / rate``-th frame of those detections. Per camera:

- alone: IDF1 of the raw track ids (``pipeline.evaluate_mtmc.loss_breakdown``'s tracker_alone);
- bound: IDF1 if each track were labelled with its majority person (perfect linking): what swaps inside tracks cost;
- tracks: how many tracks the camera made (fragments).

The tracker is deterministic on fixed detections, so one pass per row; ratio = the row's mean alone IDF1 / the
clip's first rate's, same tracker. ``--cache DIR`` keeps the detections (a few MB per clip) for the next run.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import platform
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detectors.types import Detections  # noqa: E402
from detectors.yolo import PersonDetector  # noqa: E402
from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.detect_stage import association_reid, camera_tracker, embed_detections  # noqa: E402
from pipeline.evaluate_mtmc import MotSequence, loss_breakdown, read_folder  # noqa: E402
from pipeline.sources import camera_fps, camera_stride, video_frames  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402

CLIPS = {"terrace1": ("terrace1.yaml", "epfl_terrace1"), "crowd": ("terrace1_crowd.yaml", "epfl_terrace1_crowd")}
CAMERA_ID_SPAN = 10**6  # track ids of camera k start at k * this, so ids are unique across cameras


def detect_every_frame(cfg: PipelineConfig) -> dict[str, list[tuple[int, float, Detections, np.ndarray]]]:
    """Per camera, every frame's (index, video time, person detections, their association embeddings)."""
    d = cfg.detector
    detector = PersonDetector(d.weights, imgsz=d.imgsz, conf=d.conf, iou=d.iou, device=d.device)
    embedder = association_reid(cfg).build_embedder()
    out = {}
    for cam in cfg.cameras:
        rows = []
        for index, ts, frame in tqdm(video_frames(cam.source), desc=f"detect {cam.id}", unit="frame"):
            dets = detector.detect([frame])[0]
            rows.append((index, ts, dets, embed_detections(embedder, [frame], [dets], d.crop_pad_frac)[0][0]))
        out[cam.id] = rows
    return out


def track(cfg: PipelineConfig, detected: dict, rate: float, shipped: bool) -> tuple[dict, dict, dict]:
    """The tracks of every camera at ``rate`` detections/s: MOT sequences (1-based frames, ids unique across
    cameras), the frames used, and the number of tracks per camera."""
    det = cfg.detector
    if not shipped:
        det = det.model_copy(update={"ground_gate": False,
                                     "appearance": det.appearance.model_copy(update={"enabled": False})})
    cfg = cfg.model_copy(update={"detector": det}).with_detect_fps(rate)
    seqs, frames, counts = {}, {}, {}
    for k, cam in enumerate(cfg.cameras):
        stride = camera_stride(cam, camera_fps(cam))
        tracker = camera_tracker(cfg, cam)
        blank = np.zeros((8, 8, 3), np.uint8)  # crops and their quality only feed the matcher, not the association
        seq, used, ids = MotSequence(), [], set()
        for index, ts, dets, embs in detected[cam.id][::stride]:
            tracker.update(blank, index, ts, dets, embs if tracker.wants_embeddings else None)
            t = tracker.tracks
            used.append(index + 1)
            if len(t.xyxy):
                seq.ids[index + 1] = k * CAMERA_ID_SPAN + t.track_id.astype(np.int64)
                seq.boxes[index + 1] = np.c_[t.xyxy[:, :2], t.xyxy[:, 2:] - t.xyxy[:, :2]].astype(np.float64)
                ids.update(t.track_id.tolist())
        seqs[cam.id], frames[cam.id], counts[cam.id] = seq, used, len(ids)
    return seqs, frames, counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/tracker_rates.py", description=__doc__.split("\n")[0])
    p.add_argument("--clips", nargs="*", choices=sorted(CLIPS), default=list(CLIPS))
    p.add_argument("--rates", nargs="+", type=float, default=[5, 6.25, 8.33, 12.5, 25],
                   help="detections per second (on 25 fps video: every 5th, 4th, 3rd, 2nd frame, every frame)")
    p.add_argument("--cache", type=Path, default=None, help="folder keeping each clip's detections between runs")
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)
    rows = []
    for clip in args.clips:
        config, video = CLIPS[clip]
        cfg = load_config(PROJECT_ROOT / "configs" / config)
        gt = read_folder(shared_root() / "video" / video / "gt")
        cached = args.cache / f"{clip}.pkl" if args.cache else None
        if cached is not None and cached.is_file():
            detected = pickle.loads(cached.read_bytes())
        else:
            detected = detect_every_frame(cfg)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(pickle.dumps(detected))
        for shipped in (True, False):
            first = None
            for rate in args.rates:
                seqs, frames, counts = track(cfg, detected, rate, shipped)
                b = loss_breakdown(seqs, gt, frames)
                alone, bound = b["tracker_alone"]["per_camera"], b["track_bound"]["per_camera"]
                mean = float(np.mean(list(alone.values())))
                first = mean if first is None else first
                rows.append((clip, "shipped" if shipped else "baseline", rate, alone, bound, counts, mean / first))
    print(f"Per-camera tracker alone on fixed detections; {platform.machine()} CPU x{os.cpu_count()}; IDF1 at IoU 0.5 "
          "on the frames tracked; bound = IDF1 with each track labelled by its majority person; ratio = mean alone "
          "IDF1 / the first rate's, same clip and tracker")
    print(f"{'clip':9s} {'tracker':9s} {'rate/s':>6s} {'alone c0/c1':>12s} {'bound c0/c1':>12s} {'tracks':>7s} "
          f"{'ratio':>6s}")
    for clip, kind, rate, alone, bound, counts, ratio in rows:
        cams = sorted(alone)
        print(f"{clip:9s} {kind:9s} {rate:6.2f} {'/'.join(f'{alone[c]:.3f}' for c in cams):>12s} "
              f"{'/'.join(f'{bound[c]:.3f}' for c in cams):>12s} {'/'.join(str(counts[c]) for c in cams):>7s} "
              f"{ratio:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
