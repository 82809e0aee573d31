"""Adapt HA-CNN to a site from its own recorded video, without labels.

    python -m reid.adapt --cameras cams.yaml [--cameras more.yaml ...] [--duration S] --out DIR
                         [--weights W] [--time-budget-s 1000] [--epochs 10] [--resume]

1. Replays each config's recorded cameras through the pipeline's detector and tracker (:mod:`reid.adapt.harvest`),
   and cuts a calibrated camera's tracks where they come out of a crossing.
2. Builds pseudo-identities from what the video proves (:mod:`reid.adapt.pseudo`).
3. Writes them as a Market-layout dataset in ``DIR/data`` (:mod:`reid.adapt.dataset`), the last 20 % of each
   camera's video held out to check the result.
4. Fine-tunes HA-CNN from the starting weights (the first config's ``reid.weights`` unless ``--weights``) with
   ``reid.train``'s fine-tuning recipe, checkpointing every epoch in ``DIR/train`` (``--resume`` continues there);
   two pseudo-identities are trained as two people only where the video proves it (``unknown_pairs.json``).
5. Guard rail: the pseudo-label consistency (held-out Rank-1 / mAP of finding a pseudo-identity in another
   camera) is measured with the starting weights and after; adapted weights that score a lower mAP are not
   written: the run says so and exits with status 3.
6. Writes ``DIR/model.pt`` (use it as ``reid.weights`` in the config; ``detector.appearance.weights`` may keep
   the tracker on the starting weights) with a model card, also as ``DIR/card.json``: the video, the tracks and
   pseudo-identities, the schedule, the time, the figures and the starting weights' SHA-256.

Nothing here reads ground truth: only the configs, their videos and homographies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reid.adapt.dataset import MANIFEST, write_dataset, write_rehearsal
from reid.adapt.harvest import HarvestError, Recording, embed_tracks, harvest_all, split_at_crossings, unit
from reid.adapt.pseudo import Key, build_labels
from reid.data import DatasetError, load_market
from reid.log import setup_logging
from reid.weights import WeightsError, load_model, read_weights

log = logging.getLogger("reid.adapt")

STATE = "adapt_state.json"  # what the harvest found; with --resume a run goes straight back to training
REFUSED_EXIT = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reid.adapt", description=__doc__.split("\n")[0])
    p.add_argument("--cameras", type=Path, action="append", required=True,
                   help="pipeline config of recorded video of the site (repeat for several recordings)")
    p.add_argument("--out", type=Path, required=True, help="folder of the adapted weights, data and checkpoints")
    p.add_argument("--duration", type=float, default=None, help="use the first S seconds of each video")
    p.add_argument("--weights", type=Path, default=None,
                   help="starting weights (default: the first config's reid.weights)")
    p.add_argument("--epochs", type=int, default=10, help="most epochs (the first fits the fresh classifiers only)")
    p.add_argument("--time-budget-s", type=float, default=1000.0,
                   help="training time budget; epochs are cut to fit it (reid.train --time-budget-s)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of each video kept out to check the result")
    p.add_argument("--max-crops-per-track", type=int, default=40)
    p.add_argument("--rehearse", nargs="+", default=None,
                   help="Market-layout datasets the starting weights learnt from, a sample of which is trained on "
                        "beside the site so the rest of the world is not forgotten (default: "
                        "$REID_SHARED/datasets/cuhk03_p1 when present; several share the sample, e.g. the default "
                        "weights' market1501 and cuhk03_p1; 'none': site only)")
    p.add_argument("--rehearse-ids", type=int, default=150,
                   help="identities sampled from --rehearse, shared evenly between its datasets")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="reuse DIR's harvest and continue DIR/train's checkpoint")
    return p.parse_args(argv)


def track_embeddings(recordings: list[Recording], weights: Path) -> dict[Key, np.ndarray]:
    """Each track's unit mean embedding under the starting weights (for appearance merges of uncalibrated
    cameras); empty when every camera is calibrated."""
    if all(h is not None for r in recordings for h in r.cameras.values()):
        return {}
    from trt_engines.embedder import build_embedder

    embedder = build_embedder("auto", "fp32", weights, device="cpu")
    return {k: unit(e.mean(axis=0)) for k, e in embed_tracks(recordings, embedder).items()}


def consistency(weights: Path, root: Path) -> dict[str, float]:
    """Held-out pseudo-label consistency of ``weights``: Rank-1 and mAP in percent (reid.evaluate's protocol)."""
    from reid.evaluate import EvalSet, evaluate_model

    result, _ = evaluate_model(load_model(weights), EvalSet.from_dataset(load_market(root)))
    scores = result.as_percent()
    return {"rank1": round(scores["rank1"], 2), "mAP": round(scores["mAP"], 2)}


def rehearsal_sources(args: argparse.Namespace) -> list[Path]:
    """``--rehearse``'s datasets, or by default cuhk03_p1 alone. Rehearsing both of the default weights' datasets
    (Market-1501 too) kept 5 more points of Market-1501 mAP on terrace1 but split campus4 into 9 identities where
    cuhk03_p1 alone gives 6 (README, "Learn your cameras"), so the default stays the one that meets the site
    targets."""
    if args.rehearse == ["none"]:
        return []
    if args.rehearse is not None:
        return [Path(d) for d in args.rehearse]
    from reid.paths import default_dataset

    if default_dataset().is_dir():
        return [default_dataset()]
    log.warning("no source-domain dataset to rehearse (%s is missing): the site alone is trained on", default_dataset())
    return []


def train_args(args: argparse.Namespace, data: list[Path], weights: Path) -> argparse.Namespace:
    """``reid.train``'s fine-tuning recipe (the one that made the shipped weights from their predecessor)."""
    from reid.train import parse_args as train_parse

    argv = ["--data", *map(str, data), "--out", str(args.out / "train"), "--init", str(weights),
            "--epochs", str(args.epochs), "--head-only-epochs", "1", "--lr", "1.5e-4", "--warmup-epochs", "0.3",
            "--schedule", "cosine", "--label-smoothing", "0.1", "--triplet-weight", "1.0", "--pad", "10",
            "--erase-p", "0.5", "--eval-every", "1", "--time-budget-s", str(args.time_budget_s),
            "--seed", str(args.seed), "--device", "cpu"]
    return train_parse(argv + (["--resume"] if args.resume else []))


def prepare(args: argparse.Namespace, weights: Path, data: Path, rehearse: Path | None) -> dict:
    """Harvest, label and write the dataset (and the rehearsal sample), and score the starting weights; or, with
    ``--resume`` after a harvest, read back what it found."""
    state_path = args.out / STATE
    if args.resume and state_path.is_file() and (data / MANIFEST).is_file():
        log.info("resuming: reusing the harvest in %s", data)
        return json.loads(state_path.read_text())
    t0 = time.perf_counter()
    recordings = [split_at_crossings(r) for r in harvest_all(args.cameras, args.duration, args.max_crops_per_track)]
    labels = build_labels(recordings, track_embeddings(recordings, weights))
    log.info("pseudo-identities: %s", json.dumps(labels.summary()))
    summary = write_dataset(recordings, labels, data, args.holdout)
    kept = None
    if rehearse is not None:
        sample = write_rehearsal(args.rehearse_sources, rehearse, args.rehearse_ids, seed=args.seed)
        kept = {"sources": [str(d) for d in args.rehearse_sources], **sample.as_dict(),
                "before": consistency(weights, rehearse)}
    state = {
        "videos": {r.name: {"config": str(r.config_path), "sources": r.sources,
                            "seconds": {c: round(d, 1) for c, d in r.duration_s.items()},
                            "calibrated": [c for c, h in r.cameras.items() if h is not None]} for r in recordings},
        "pseudo_labels": labels.summary(), "dataset": summary.as_dict(),
        "harvest_s": round(time.perf_counter() - t0, 1),
        "consistency_before": consistency(weights, data),
        "rehearsal": kept,
    }
    state_path.write_text(json.dumps(state, indent=1))
    log.info("dataset: %d training crops of %d pseudo-identities, %d query / %d gallery held out",
             summary.train_crops, summary.train_ids, summary.query_crops, summary.gallery_crops)
    log.info("starting weights on the held-out part: Rank-1 %.1f mAP %.1f", state["consistency_before"]["rank1"],
             state["consistency_before"]["mAP"])
    return state


def adapt(args: argparse.Namespace) -> int:
    from reid.train import Trainer
    from trt_engines.cache import file_hash

    t0 = time.perf_counter()
    if args.weights is None:
        from pipeline.config import load_config

        args.weights = load_config(args.cameras[0]).reid.weights
    read_weights(args.weights)  # a clear error now, not after the harvest
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data" / "site"
    args.rehearse_sources = rehearsal_sources(args)
    rehearse = args.out / "data" / "rehearse" if args.rehearse_sources else None
    state = prepare(args, args.weights, data, rehearse)
    trainer = Trainer(train_args(args, [data] + ([rehearse] if rehearse is not None else []), args.weights))
    trained = trainer.fit()
    last = next(h for h in reversed(trainer.history) if "mAP" in h)
    # With a rehearsal set the trainer scores both ("site/..." and "rehearse/..."); the guard reads the site only.
    site = {k: last.get(f"site/{k}", last[k]) for k in ("rank1", "mAP")} if rehearse else last
    after = {"rank1": round(site["rank1"], 2), "mAP": round(site["mAP"], 2)}
    before = state["consistency_before"]
    figures = {"before": before, "after": after}
    if state.get("rehearsal"):
        kept = state["rehearsal"]
        kept["after"] = {k: round(last[f"rehearse/{k}"], 2) for k in ("rank1", "mAP")}
        log.info("source domain kept (%s, %d query crops of people never trained on): mAP %.1f -> %.1f",
                 # a run prepared before several sources were possible names one "source"
                 " + ".join(Path(d).name for d in kept.get("sources", [kept.get("source", "?")])),
                 kept["query_crops"], kept["before"]["mAP"], kept["after"]["mAP"])
    log.info("pseudo-label consistency (held out): Rank-1 %.1f -> %.1f, mAP %.1f -> %.1f", before["rank1"],
             after["rank1"], before["mAP"], after["mAP"])
    if after["mAP"] < before["mAP"]:
        (args.out / "refused.json").write_text(json.dumps(figures, indent=1))
        log.error("adaptation made the pseudo-label consistency worse (mAP %.1f < %.1f with the starting weights): "
                  "no weights written; keep %s", after["mAP"], before["mAP"], args.weights)
        return REFUSED_EXIT
    payload = read_weights(trained)
    payload["card"]["adaptation"] = {
        **{k: state[k] for k in ("videos", "pseudo_labels", "dataset", "harvest_s", "rehearsal")},
        "pseudo_label_consistency": figures,
        "start_weights": str(args.weights), "start_weights_sha256": file_hash(args.weights, None),
        "wall_s": round(time.perf_counter() - t0, 1),  # this invocation (a resumed run: since the resume)
    }
    out = args.out / "model.pt"
    tmp = out.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    (args.out / "card.json").write_text(json.dumps(payload["card"], indent=1, default=str))
    # Whether the per-camera tracker should take them too depends on the site (README, "Learn your cameras"): on
    # terrace1's crowd they cost 0.09 MTMC IDF1 through one swapped track, on campus4 they give its 6 identities.
    log.info("wrote %s; card in %s. In the config: reid.weights: %s (the tracker follows it unless "
             "detector.appearance.weights: %s keeps the starting weights; benchmarks/adapt_site.py measures both)",
             out, args.out / "card.json", out, args.weights)
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import ConfigError
    from pipeline.sources import SourceError

    args = parse_args(argv)
    setup_logging(logging.INFO)
    try:
        return adapt(args)
    except (HarvestError, DatasetError, WeightsError, ConfigError, SourceError) as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
