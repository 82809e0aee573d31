"""Site check of adapted weights: the site's own people, the pipeline on the site, and the source domain kept.

    python benchmarks/adapt_site.py --weights runs/adapt/model.pt [--baseline reid/weights/hacnn_joint.pt]
                                    [--clips crowd terrace1] [--campus] [--skip-mtmc] [--skip-source]

Per weights file (the baseline first, then the adapted one), one row each of:

- **site crops**: for each annotated terrace1 clip, crops cut from the *ground-truth* boxes (one per person every
  25 frames, view c0 as queries, view c1 as gallery), embedded with the pipeline's embedder: Rank-1 / mAP of
  finding a person in the other view. Ground truth is used here only, to score; ``reid.adapt`` never reads it.
- **MTMC IDF1** of each clip's replay with these weights (``benchmarks/mtmc_accuracy.py``'s replay and scoring),
  its ids, and its track bound ("MTMC bound": the MTMC IDF1 the run's per-camera tracks would reach if linked
  perfectly, so a loss shows as the tracker's or the linking's); for the adapted weights also a row "matching
  only", where the per-camera tracker's association keeps the baseline weights (``detector.appearance.weights``)
  and only the crops sent to the matcher use the adapted ones (campus4 too, with ``--campus``);
- **campus4** (``--campus``; three views, no calibration, no ground truth, about five people): the identities
  minted at ``--speed max`` and at recorded pace, whether every decision is the same at both (1 / 0), and the
  pair F1, precision and recall of the identities against ``benchmarks/campus4_tracks.json``
  (``mtmc_accuracy.campus_pairs``; an adapted tracker's tracks are labelled by overlap with the labelled ones);
- **source domain**: cuhk03_p1 and Market-1501 test splits (``reid.evaluate``'s protocol), to show how much of
  what the weights learnt elsewhere is kept.

Δ rows: adapted minus baseline, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mtmc_accuracy import CLIPS, campus_pairs, replay  # noqa: E402

from pipeline.embed_stage import crop_problem  # noqa: E402
from pipeline.evaluate_mtmc import evaluate, loss_breakdown, read_folder, read_frames, read_mot  # noqa: E402
from pipeline.sources import video_frames  # noqa: E402
from reid.data import load_market  # noqa: E402
from reid.evaluate import EvalSet, evaluate_model  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.metrics import distance_matrix, evaluate_rank  # noqa: E402
from reid.paths import DEFAULT_WEIGHTS, PROJECT_ROOT, shared_root  # noqa: E402
from reid.weights import load_model  # noqa: E402

EVERY = 25  # frames between two crops of one person (1 s at 25 fps): near-duplicates would inflate the scores


def gt_crops(clip_dir: Path, camera: str, every: int = EVERY) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of the ground-truth boxes of ``camera`` on every ``every``-th frame, and their person ids."""
    gt = read_mot(clip_dir / "gt" / f"{camera}.txt")
    crops, pids = [], []
    for index, _, frame in video_frames(clip_dir / f"terrace1-{camera}.mp4", every):
        ids, boxes = gt.at(index + 1)
        h, w = frame.shape[:2]
        for pid, (x, y, bw, bh) in zip(ids.tolist(), boxes.tolist(), strict=True):
            x1, y1, x2, y2 = max(0, round(x)), max(0, round(y)), min(w, round(x + bw)), min(h, round(y + bh))
            crop = frame[y1:y2, x1:x2]
            if crop.size and crop_problem(crop) is None and y2 - y1 >= 16:
                crops.append(crop)
                pids.append(pid)
    return crops, np.asarray(pids, np.int64)


def site_scores(weights: Path, clip_dir: Path) -> dict[str, float]:
    from trt_engines.embedder import build_embedder

    embedder = build_embedder("auto", "fp32", weights, device="cpu")
    (qc, qp), (gc, gp) = gt_crops(clip_dir, "c0"), gt_crops(clip_dir, "c1")
    dist = distance_matrix(embedder.embed(qc), embedder.embed(gc))
    r = evaluate_rank(dist, qp, gp, np.zeros(len(qp), np.int64), np.ones(len(gp), np.int64)).as_percent()
    return {"rank1": r["rank1"], "mAP": r["mAP"], "queries": len(qp), "gallery": len(gp)}


def mtmc(weights: Path, clip: str, port: int, tracker_weights: Path | None = None) -> dict[str, float]:
    config, folder = CLIPS[clip]
    with tempfile.TemporaryDirectory() as tracks:
        run = replay(PROJECT_ROOT / "configs" / config, None, port, Path(tracks), weights=weights,
                     tracker_weights=tracker_weights)
        gt, frames = read_folder(shared_root() / "video" / folder / "gt"), read_frames(Path(tracks))
        result = evaluate(read_folder(Path(tracks)), gt, frames)
        bound = loss_breakdown(run["raw"], gt, frames, linked=run["linked"])["track_bound"]["mtmc_idf1"]
    return {"mtmc_idf1": result["mtmc_idf1"], "ids": run["ids"], "people": result["num_gt_ids"], "track_bound": bound}


def campus(weights: Path, port: int, tracker_weights: Path | None = None) -> dict[str, float]:
    """campus4's identities at full speed and at recorded pace, and whether the decisions are the same."""
    config = PROJECT_ROOT / "configs" / "cams.example.yaml"
    fast, paced = (replay(config, speed, port, weights=weights, tracker_weights=tracker_weights, logs=True)
                   for speed in (None, 1.0))
    pairs = campus_pairs(fast["owners"], fast["logs"])  # the run's tracks labelled by overlap with the labelled ones
    return {"campus4 ids max": fast["ids"], "campus4 ids 1x": paced["ids"],
            "campus4 same": float(fast["decisions"] == paced["decisions"]), "campus4 pair F1": pairs["f1"],
            "campus4 pair P": pairs["precision"], "campus4 pair R": pairs["recall"]}


def source_scores(weights: Path, dataset: str) -> dict[str, float]:
    r, _ = evaluate_model(load_model(weights), EvalSet.from_dataset(load_market(shared_root() / "datasets" / dataset)))
    s = r.as_percent()
    return {"rank1": s["rank1"], "mAP": s["mAP"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/adapt_site.py", description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="adapted weights (python -m reid.adapt's model.pt)")
    p.add_argument("--baseline", type=Path, default=DEFAULT_WEIGHTS, help="weights to compare with")
    p.add_argument("--clips", nargs="*", choices=sorted(CLIPS), default=["crowd", "terrace1"],
                   help="annotated clips (none: with --campus, campus4 only)")
    p.add_argument("--campus", action="store_true", help="also replay campus4 (configs/cams.example.yaml) at both "
                   "speeds: for weights adapted on campus4")
    p.add_argument("--skip-mtmc", action="store_true", help="no pipeline replays")
    p.add_argument("--skip-source", action="store_true", help="no cuhk03_p1 / Market-1501 evaluation")
    p.add_argument("--port", type=int, default=5598)
    args = p.parse_args(argv)
    setup_logging(30)
    rows = {}
    for label, weights in (("baseline", args.baseline), ("adapted", args.weights)):
        row: dict[str, float] = {}
        for clip in args.clips:
            site = site_scores(weights, shared_root() / "video" / CLIPS[clip][1])
            row[f"{clip} crops R1"], row[f"{clip} crops mAP"] = site["rank1"], site["mAP"]
            if not args.skip_mtmc:
                m = mtmc(weights, clip, args.port)
                row[f"{clip} MTMC"], row[f"{clip} ids"] = m["mtmc_idf1"], m["ids"]
                row[f"{clip} MTMC bound"] = m["track_bound"]
        if args.campus:
            row.update(campus(weights, args.port))
        if not args.skip_source:
            for ds in ("cuhk03_p1", "market1501"):
                s = source_scores(weights, ds)
                row[f"{ds} R1"], row[f"{ds} mAP"] = s["rank1"], s["mAP"]
        rows[label] = row
    if not args.skip_mtmc:
        rows["matching only"] = {}
        for clip in args.clips:
            m = mtmc(args.weights, clip, args.port, tracker_weights=args.baseline)
            only = rows["matching only"]
            only[f"{clip} MTMC"], only[f"{clip} ids"], only[f"{clip} MTMC bound"] = \
                m["mtmc_idf1"], m["ids"], m["track_bound"]
        if args.campus:
            rows["matching only"].update(campus(args.weights, args.port, tracker_weights=args.baseline))
    rows["Δ"] = {k: rows["adapted"][k] - rows["baseline"][k] for k in rows["baseline"] if k in rows["adapted"]}
    print(f"Adaptation site check; {platform.machine()} CPU x{os.cpu_count()}; crops: ground-truth boxes every "
          f"{EVERY} frames, query c0 / gallery c1, Rank-1 and mAP in %; MTMC: IDF1 of the clip's replay; source: "
          f"test splits; baseline {args.baseline}, adapted {args.weights}")
    keys = list(rows["baseline"])
    print(f"{'':<14}" + "".join(f"{k:>{max(len(k) + 2, 9)}}" for k in keys))
    for label, row in rows.items():
        cells = []
        for k in keys:
            if k not in row:
                cells.append(f"{'-':>{max(len(k) + 2, 9)}}")
                continue
            v = row[k]
            fmt = ".3f" if "MTMC" in k or " pair " in k else ".0f" if k.endswith(" ids") or k.startswith("campus4") \
                else ".1f"
            cells.append(f"{v:>{'+' if label == 'Δ' else ''}{max(len(k) + 2, 9)}{fmt}}")
        print(f"{label:<14}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
