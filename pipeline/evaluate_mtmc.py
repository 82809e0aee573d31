"""Score a run's tracks against multi-camera ground truth: per camera and across cameras.

    python -m pipeline.evaluate_mtmc --tracks runs/terrace1/tracks --gt ../shared/video/epfl_terrace1/gt [--json]

Both folders hold one MOTChallenge file per camera, ``<camera>.txt`` with lines ``frame,id,x,y,w,h,...``
(frame 1-based). Ground-truth ids and predicted global ids are shared by all cameras, so the same files give

- per camera: IDF1/IDP/IDR (Identity), MOTA and id switches (CLEAR), HOTA, and the detection-only recall and
  precision (CLEAR's matching without identities), which bound what identity can reach;
- across cameras: every camera's frames as one sequence with global ids (the MTMC IDF1 that AI City and
  DukeMTMC report), and the number of global ids minted against the number of people.

Only frames the detector ran on count: the tracks folder's ``frames.json`` (written by ``run_pipeline.py
--tracks-out``) lists them per camera; without it every frame of the ground truth counts. The metrics are
TrackEval's (the maintained reference implementation of HOTA, CLEAR and Identity), fed with IoU similarities.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import CLEAR, HOTA, Identity

from reid.log import setup_logging

log = logging.getLogger(__name__)

FRAMES_FILE = "frames.json"


class MotFileError(ValueError):
    """A MOTChallenge file or folder that cannot be read; the message names the file and line."""


@dataclass
class MotSequence:
    """One camera's boxes by 1-based frame: ids (int64) and boxes (float64 x, y, w, h)."""

    ids: dict[int, np.ndarray] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)

    def at(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ids.get(frame, np.zeros(0, np.int64)), self.boxes.get(frame, np.zeros((0, 4)))


def read_mot(path: Path) -> MotSequence:
    """Parse ``frame,id,x,y,w,h[,...]`` lines; a malformed line raises :class:`MotFileError` naming it."""
    if not path.is_file():
        raise MotFileError(f"{path}: file is missing")
    rows: dict[int, list[tuple[int, list[float]]]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(" ", "").split(",")
        try:
            frame, pid = int(float(parts[0])), int(float(parts[1]))
            box = [float(v) for v in parts[2:6]]
        except (ValueError, IndexError) as e:
            raise MotFileError(f"{path}:{lineno}: expected 'frame,id,x,y,w,h,...', got {line!r}") from e
        if len(box) != 4 or frame < 1 or box[2] <= 0 or box[3] <= 0:
            raise MotFileError(f"{path}:{lineno}: frame must be >= 1 and the box have positive size: {line!r}")
        rows.setdefault(frame, []).append((pid, box))
    seq = MotSequence()
    for frame, items in rows.items():
        seq.ids[frame] = np.array([p for p, _ in items], dtype=np.int64)
        seq.boxes[frame] = np.array([b for _, b in items], dtype=np.float64)
    return seq


def read_folder(folder: Path) -> dict[str, MotSequence]:
    """``<camera>.txt`` files of a folder, by camera id."""
    if not folder.is_dir():
        raise MotFileError(f"{folder}: folder is missing")
    seqs = {p.stem: read_mot(p) for p in sorted(folder.glob("*.txt"))}
    if not seqs:
        raise MotFileError(f"{folder}: no <camera>.txt files")
    return seqs


def read_frames(folder: Path) -> dict[str, list[int]] | None:
    """The frames the detector ran on per camera (``frames.json``: ranges ``[first, last, step]``), if given."""
    path = folder / FRAMES_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return {cam: sorted({f for a, b, s in ranges for f in range(int(a), int(b) + 1, int(s))})
                for cam, ranges in raw.items()}
    except (ValueError, TypeError) as e:
        raise MotFileError(f"{path}: expected {{camera: [[first, last, step], ...]}} ({e})") from e


def frame_ranges(frames: list[int]) -> list[list[int]]:
    """Compress sorted 1-based frame numbers into ``[first, last, step]`` runs (the ``frames.json`` format)."""
    runs: list[list[int]] = []
    for f in frames:
        if runs:
            first, last, step = runs[-1]
            if first == last and f > last:
                runs[-1] = [first, f, f - first]
                continue
            if f - last == step:
                runs[-1][1] = f
                continue
        runs.append([f, f, 1])
    return runs


def _trackeval_data(pairs: list[tuple[MotSequence, MotSequence, list[int]]]) -> dict:
    """TrackEval's per-sequence input: contiguous ids and IoU similarities over every (gt, pred, frames) part.

    Several parts (cameras) become one sequence, their time steps one after another: the MTMC view.
    """
    gt_index: dict[int, int] = {}
    tr_index: dict[int, int] = {}
    gt_ids, tr_ids, sims = [], [], []
    for gt, pred, frames in pairs:
        for f in frames:
            g_id, g_box = gt.at(f)
            t_id, t_box = pred.at(f)
            gt_ids.append(np.array([gt_index.setdefault(int(i), len(gt_index)) for i in g_id], dtype=np.int64))
            tr_ids.append(np.array([tr_index.setdefault(int(i), len(tr_index)) for i in t_id], dtype=np.int64))
            if len(g_box) and len(t_box):
                sims.append(_BaseDataset._calculate_box_ious(g_box, t_box, box_format="xywh"))
            else:
                sims.append(np.zeros((len(g_box), len(t_box))))
    return {
        "num_timesteps": len(gt_ids),
        "num_gt_ids": len(gt_index),
        "num_tracker_ids": len(tr_index),
        "num_gt_dets": int(sum(len(i) for i in gt_ids)),
        "num_tracker_dets": int(sum(len(i) for i in tr_ids)),
        "gt_ids": gt_ids,
        "tracker_ids": tr_ids,
        "similarity_scores": sims,
    }


def _score(data: dict, iou: float, full: bool) -> dict:
    """Identity metrics, plus CLEAR and HOTA when ``full``."""
    config = {"THRESHOLD": iou, "PRINT_CONFIG": False}
    ident = Identity(config).eval_sequence(data)
    out = {"idf1": float(ident["IDF1"]), "idp": float(ident["IDP"]), "idr": float(ident["IDR"]),
           "num_ids": data["num_tracker_ids"], "num_gt_ids": data["num_gt_ids"]}
    if full:
        clear = CLEAR(config).eval_sequence(data)
        hota = HOTA({"PRINT_CONFIG": False}).eval_sequence(data)
        out.update(mota=float(clear["MOTA"]), id_switches=int(clear["IDSW"]), hota=float(np.mean(hota["HOTA"])),
                   det_recall=float(clear["CLR_Re"]), det_precision=float(clear["CLR_Pr"]),
                   gt_dets=data["num_gt_dets"], pred_dets=data["num_tracker_dets"])
    return out


def evaluate(
    tracks: dict[str, MotSequence], gt: dict[str, MotSequence], frames: dict[str, list[int]] | None = None,
    iou: float = 0.5, full: bool = True,
) -> dict:
    """Per-camera and cross-camera scores (fractions). Cameras are the ground truth's; frames default to all
    frames of the ground truth file. ``full=False``: identity scores only per camera (no CLEAR, no HOTA)."""
    missing = sorted(set(gt) - set(tracks))
    if missing:
        log.warning("no tracks for camera(s) %s: every ground-truth box there is missed", ", ".join(missing))
    pairs = []
    per_camera = {}
    for cam, g in gt.items():
        pred = tracks.get(cam, MotSequence())
        if frames is not None and cam in frames:
            cam_frames = frames[cam]
        else:
            cam_frames = list(range(1, max([*g.ids, *pred.ids], default=0) + 1))
        pairs.append((g, pred, cam_frames))
        per_camera[cam] = {**_score(_trackeval_data([pairs[-1]]), iou, full=full), "frames": len(cam_frames)}
    mtmc = _score(_trackeval_data(pairs), iou, full=False)
    return {
        "mtmc_idf1": mtmc["idf1"], "mtmc_idp": mtmc["idp"], "mtmc_idr": mtmc["idr"],
        "num_ids": mtmc["num_ids"], "num_gt_ids": mtmc["num_gt_ids"], "iou": iou, "per_camera": per_camera,
    }


def match_boxes(gt: np.ndarray, pred: np.ndarray, iou: float = 0.5,
                box_format: str = "xywh") -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of ground-truth and predicted boxes of one frame (the assignment of highest total IoU,
    pairs under ``iou`` dropped): (ground-truth rows, predicted rows). ``box_format``: TrackEval's, ``xywh`` or
    ``x0y0x1y1``."""
    if not len(gt) or not len(pred):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = _BaseDataset._calculate_box_ious(np.asarray(gt, float), np.asarray(pred, float), box_format=box_format)
    rows, cols = linear_sum_assignment(-sim)
    keep = sim[rows, cols] >= iou
    return rows[keep], cols[keep]


def person_votes(ts: Sequence[float], boxes: Sequence[Sequence[float]], gt: MotSequence, fps: float) -> Counter[int]:
    """How many of a track's xyxy ``boxes`` (at video times ``ts``) match each ground-truth person at IoU 0.5, -1
    counting those that match nobody: scores a track known by its times, not its frame numbers (``reid.adapt``'s
    harvested tracks)."""
    votes: Counter[int] = Counter()
    for t, (x1, y1, x2, y2) in zip(ts, boxes, strict=True):
        ids, gt_boxes = gt.at(round(t * fps) + 1)
        rows, _ = match_boxes(gt_boxes, np.array([[x1, y1, x2 - x1, y2 - y1]]))
        votes[int(ids[rows[0]]) if len(rows) else -1] += 1
    return votes


def track_person(boxes: Mapping[int, Sequence[Sequence[float]]], track_id: int, gt: MotSequence,
                 frames: Iterable[int]) -> int:
    """The ground-truth person most of a track's boxes match at IoU 0.5 on ``frames`` of a track log (frame index
    -> rows ``[track_id, x1, y1, x2, y2, ...]``, ``pipeline.tracks_out.read_track_log``); -1 when most match nobody
    or the track has no box there."""
    votes: Counter[int] = Counter()
    for f in frames:
        for row in boxes.get(f, ()):
            if int(row[0]) == track_id:
                x1, y1, x2, y2 = row[1:5]
                ids, g = gt.at(f + 1)
                hit, _ = match_boxes(g, np.array([[x1, y1, x2 - x1, y2 - y1]]))
                votes[int(ids[hit[0]]) if len(hit) else -1] += 1
    return votes.most_common(1)[0][0] if votes else -1


def _gt_labels(pred: MotSequence, gt: MotSequence, frame: int, iou: float) -> np.ndarray:
    """The ground-truth id of each predicted box of ``frame`` (one-to-one, best IoU first, at least ``iou``); -1
    for a box that matches nobody."""
    p_ids, p_box = pred.at(frame)
    g_ids, g_box = gt.at(frame)
    out = np.full(len(p_ids), -1, dtype=np.int64)
    rows, cols = match_boxes(g_box, p_box, iou)
    out[cols] = g_ids[rows]
    return out


def loss_breakdown(
    raw: dict[str, MotSequence], gt: dict[str, MotSequence], frames: dict[str, list[int]] | None = None,
    iou: float = 0.5, linked: dict[str, MotSequence] | None = None,
) -> dict:
    """Where identity is lost, from the per-camera tracks before any cross-camera linking (``raw``: each camera's
    tracked boxes labelled with its own track ids, unique across cameras, e.g. from
    :func:`pipeline.tracks_out.raw_tracks`; ``linked``: the tracks the identity stage links, when it split some of
    them at swaps, else ``raw``'s):

    - ``tracker_alone``: IDF1 of the raw track ids (what the per-camera tracker delivers by itself);
    - ``track_bound``: each linked track labelled with the person most of its boxes belong to - perfect linking of
      these tracks; the gap to it is the linking's loss, and its gap to the next is the tracker's (swaps inside
      tracks, less those the identity stage split);
    - ``detection_bound``: every box labelled with its own person - perfect tracking of these boxes; its gap to
      1 is the detector's loss (missed people, false boxes).

    Returns ``{name: {"mtmc_idf1": .., "per_camera": {cam: idf1}}}``.
    """
    det_bound: dict[str, MotSequence] = {}
    track_bound: dict[str, MotSequence] = {}
    for cam, g in gt.items():
        seq = (linked or raw).get(cam, MotSequence())
        cam_frames = frames[cam] if frames is not None and cam in frames else sorted(seq.ids)
        labels = {f: _gt_labels(seq, g, f, iou) for f in cam_frames if f in seq.ids}
        votes: dict[int, dict[int, int]] = {}
        for f, lab in labels.items():
            for t, person in zip(seq.ids[f].tolist(), lab.tolist(), strict=True):
                votes.setdefault(t, {}).setdefault(person, 0)
                votes[t][person] += 1
        owner = {t: max(v, key=lambda p, v=v: (v[p], p >= 0)) for t, v in votes.items()}
        # A false box or a track of false boxes keeps an id of its own, which no person shares.
        unique = iter(range(-2, -(10**9), -1))
        det_bound[cam] = MotSequence(
            {f: np.array([p if p >= 0 else next(unique) for p in lab.tolist()], np.int64) for f, lab in labels.items()},
            {f: seq.boxes[f] for f in labels})
        own = {t: (p if p >= 0 else next(unique)) for t, p in owner.items()}
        track_bound[cam] = MotSequence({f: np.array([own[t] for t in seq.ids[f].tolist()], np.int64) for f in labels},
                                       {f: seq.boxes[f] for f in labels})
    out = {"tracker_alone": {"mtmc_idf1": None, "per_camera": {
        cam: r["idf1"] for cam, r in evaluate(raw, gt, frames, iou, full=False)["per_camera"].items()}}}
    for name, seqs in (("track_bound", track_bound), ("detection_bound", det_bound)):
        r = evaluate(seqs, gt, frames, iou, full=False)
        out[name] = {"mtmc_idf1": r["mtmc_idf1"], "per_camera": {c: v["idf1"] for c, v in r["per_camera"].items()}}
    return out


def format_table(result: dict) -> str:
    cols = ["idf1", "idp", "idr", "mota", "hota", "id_switches", "det_recall", "det_precision", "num_ids", "frames"]
    lines = ["camera  " + "  ".join(f"{c:>13s}" for c in cols)]
    for cam, r in result["per_camera"].items():
        lines.append(f"{cam:7s} " + "  ".join(f"{r[c]:13.3f}" if isinstance(r[c], float) else f"{r[c]:13d}"
                                               for c in cols))
    lines.append(f"across cameras: IDF1 {result['mtmc_idf1']:.3f} (IDP {result['mtmc_idp']:.3f}, "
                 f"IDR {result['mtmc_idr']:.3f}); {result['num_ids']} global ids for {result['num_gt_ids']} people")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.evaluate_mtmc", description=__doc__.split("\n")[0])
    p.add_argument("--tracks", type=Path, required=True, help="folder of <camera>.txt (run_pipeline --tracks-out)")
    p.add_argument("--gt", type=Path, required=True, help="folder of ground-truth <camera>.txt, MOTChallenge format")
    p.add_argument("--iou", type=float, default=0.5, help="IoU at which a box matches (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    try:
        result = evaluate(read_folder(args.tracks), read_folder(args.gt), read_frames(args.tracks), args.iou)
    except MotFileError as e:
        log.error("%s", e)
        return 2
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
