"""Cross-camera identity accuracy on the annotated EPFL terrace1 clips, where it is lost, and campus4's identity count.

    python benchmarks/mtmc_accuracy.py [--repeats 1] [--skip-campus] [--skip-baseline] [--clips terrace1 crowd]
                                       [--detect-fps 10]

For each annotated clip (``configs/terrace1.yaml``: two overlapping, calibrated views, six people, 60 s;
``configs/terrace1_crowd.yaml``: the same views crowded, seven people, about six per view, 30 s) a replay at full
speed writes its tracks (``--tracks-out``), scored with ``pipeline.evaluate_mtmc`` against the shared ground
truth, and its per-camera tracks before linking, scored by ``pipeline.evaluate_mtmc.loss_breakdown``:

- unfilled: the MTMC IDF1 of the detected boxes alone, before ``--tracks-out`` fills the frames a person was
  missed on (``pipeline.gaps``; what filling adds is the difference);
- tracker alone: IDF1 of the raw per-camera track ids;
- track bound: MTMC IDF1 if these tracks were linked perfectly (the gap to it: the linking's loss); a track the
  identity stage split where it swapped people (``track.split``) counts as its parts;
- splits: how many tracks it split so, and how many of those at a change of person (scored with the ground truth,
  the 2 s before the cut against the 2 s after);
- detection bound: MTMC IDF1 if these boxes were tracked perfectly (the gap to 1: the detector's loss).

The last three use each track's boxes with its own gaps filled (not those between two tracks of one identity,
which only the linking knows), so the delivered figure can pass the track bound by what the linking fills.

Each clip runs three times: the baseline without appearance in the per-camera association and without the ground
gate (``detector.appearance`` and ``detector.ground_gate`` off, the tracker before them), the shipped config
without the ground gate, and the config as shipped. Then the three campus4 views of
``configs/cams.example.yaml`` (80 s, no calibration, five people) at ``--speed max`` and at recorded pace:
the identities minted must not depend on the speed, and how right they are: campus4 has no ground truth, but its
tracks carry hand labels (``benchmarks/campus4_tracks.json``, one person per track or where it switches, given
by looking at the crops), so the campus rows score the identities as pairs of tracks (precision: pairs given one
identity that are one person; recall: pairs of one person given one identity; F1 in the MTMC column). The labels
name the tracks of the shipped detector and tracker, with their boxes: a run whose tracker cuts other tracks gets
its tracks labelled by overlap with those boxes (:func:`campus_labels`).
``--embed-all-row`` adds, before the shipped row, the shipped config with the association embedding every detection
of every frame (``detector.appearance.refresh_s`` 0, as before session 20): the cost of embedding only where
appearance can decide, and what it changes, in one run.
``--detect-fps`` runs the annotated clips' cameras at another detection rate than their configs' 5/s (the rows
say which): no rule of the tracker or the matcher may be tied to one frame rate.
One table: per row the median over ``--repeats`` runs, each in a fresh run directory (a fresh Redis). RT = video
seconds per wall second, from the sources' start to the last decision (model loading excluded); ratio = this
row's RT / the clip's first row's (its baseline, unless skipped).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.evaluate_mtmc import MotSequence, evaluate, loss_breakdown, read_folder, read_frames, track_person  # noqa: E402
from pipeline.events import track_parts  # noqa: E402
from pipeline.gaps import GapFiller, TrackLog  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402
from pipeline.tracks_out import raw_tracks, read_track_log, write_tracks  # noqa: E402
from reid.identity.geometry import box_iou  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402

CAMPUS_LABELS = Path(__file__).resolve().parent / "campus4_tracks.json"
UNFILLED = "detected"  # the tracks as detected, gaps not filled: a subfolder of --tracks-out
CLIPS = {
    "terrace1": ("terrace1.yaml", "epfl_terrace1"),
    "crowd": ("terrace1_crowd.yaml", "epfl_terrace1_crowd"),
}


def replay(config_path: Path, speed: float | None, port: int, tracks_out: Path | None = None,
           appearance: bool | None = None, weights: Path | None = None,
           tracker_weights: Path | None = None,
           adjust: Callable[[PipelineConfig], PipelineConfig] | None = None, logs: bool = False) -> dict:
    """One replay in a fresh run directory: identities, events (deterministic view), wall time, tracks; with
    ``tracks_out``, also the per-camera tracks before linking (``raw``); with ``logs``, every camera's track log
    (``logs``: camera -> :class:`pipeline.gaps.TrackLog`). ``appearance`` overrides the config's
    ``detector.appearance.enabled``, ``weights`` its ``reid.weights``, ``tracker_weights`` its
    ``detector.appearance.weights``; ``adjust`` changes anything else of the loaded config."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config_path).with_run_dir(Path(tmp))
        update: dict = {"endpoints": cfg.endpoints.model_copy(update={"events": f"tcp://127.0.0.1:{port}"})}
        det = cfg.detector
        change = {k: v for k, v in (("enabled", appearance), ("weights", tracker_weights)) if v is not None}
        if change:
            update["detector"] = det.model_copy(update={"appearance": det.appearance.model_copy(update=change)})
        if weights is not None:
            update["reid"] = cfg.reid.model_copy(update={"weights": weights})
        cfg = cfg.model_copy(update=update)
        if adjust is not None:
            cfg = adjust(cfg)
        sup = Supervisor(cfg, replay=True, speed=speed, status=False, track_log=tracks_out is not None or logs)
        code = sup.run()
        match = next(p for p in sup.procs if p.kind == "match")
        wall = (match.done_at or time.monotonic()) - sup.t0  # sources started -> last decision made
        if code != 0:
            raise SystemExit(f"replay of {config_path} failed with exit code {code}")
        events = list(sup.recorder.spilled())
        raw = linked = None
        parts = track_parts(events)
        if tracks_out is not None:
            cams, filler = [c.id for c in cfg.cameras], GapFiller.from_config(cfg)
            write_tracks(cfg.resolved_run_dir, cams, events, tracks_out, filler=filler)
            write_tracks(cfg.resolved_run_dir, cams, events, tracks_out / UNFILLED)
            raw = raw_tracks(cfg.resolved_run_dir, cams, filler=filler)
            linked = raw_tracks(cfg.resolved_run_dir, cams, filler=filler, parts=parts)
        track_logs = {c.id: read_track_log(cfg.resolved_run_dir, c.id, parts) for c in cfg.cameras} if logs else None
        duration = max(e["video_ts"] for e in events) if events else float("nan")
        decided = [(e["camera_id"], e["track_id"], e["global_id"]) for e in events if e["kind"] != "track.ended"]
        decisions = sorted(decided)
        return {"ids": len({e["global_id"] for e in events if e.get("global_id") is not None}),
                "splits": [e for e in events if e["kind"] == "track.split"],
                "wall_s": wall, "rt": duration / wall, "decisions": decisions, "raw": raw, "linked": linked,
                "logs": track_logs,
                "owners": {f"{cam}/{tid}": gid for cam, tid, gid in decided}}  # the latest decision wins


def campus_labels(logs: Mapping[str, TrackLog], labels_path: Path = CAMPUS_LABELS,
                  min_iou: float = 0.5) -> dict[str, str]:
    """The person of each track of a campus4 run, from the hand-labelled tracks' boxes: each of the run's boxes
    votes for the person of the labelled box that overlaps it on that frame (IoU >= ``min_iou``; a track's person
    changes at its ``switches``); a track takes its vote's winner when that covers at least half its boxes. Tracks
    that cover no labelled person that well, or mostly a track labelled unclear, are left out. So the shipped
    tracker's tracks get their labels back (the majority person of a track that switches), and a tracker that cuts
    other tracks (adapted weights, another tracker) gets them by overlap."""
    data = json.loads(labels_path.read_text())
    person = {**data["tracks"], **{k: None for k in data["unclear"]}}
    labelled: dict[tuple[str, int], list[tuple[str | None, list[float]]]] = {}  # (camera, frame) -> person, box
    for key, rows in data["boxes"].items():
        cam, switches = key.split("/")[0], data.get("switches", {}).get(key, [])
        for frame, *box in rows:
            who = next((p for since, p in reversed(switches) if frame >= since), person[key])
            labelled.setdefault((cam, int(frame)), []).append((who, box))
    out: dict[str, str] = {}
    for cam, log in logs.items():
        votes: dict[int, Counter[str | None]] = {}
        for frame, rows in log.boxes.items():
            if not rows:
                continue
            ref = labelled.get((cam, int(frame)), [])
            overlap = box_iou(np.array([r[1:5] for r in rows], np.float64),
                              np.array([b for _, b in ref], np.float64).reshape(-1, 4))
            for row, ious in zip(rows, overlap, strict=True):
                best = int(ious.argmax()) if len(ref) else -1
                who = ref[best][0] if best >= 0 and ious[best] >= min_iou else None
                votes.setdefault(int(row[0]), Counter())[who] += 1
        for track, counted in votes.items():
            (winner, n), = counted.most_common(1)
            if winner is not None and 2 * n >= sum(counted.values()):
                out[f"{cam}/{track}"] = winner
    return out


def campus_pairs(owner: dict[str, int], logs: Mapping[str, TrackLog]) -> dict:
    """Pair precision, recall and F1 of campus4's identities against the hand labels (:func:`campus_labels`),
    from each track's final identity (``"camera/track"``: global id; a corrected track's latest), over the run's
    labelled tracks that got an identity. Pairs depend on how the tracker cut the tracks: compare runs of one
    tracker, or read them with the identity counts."""
    person = {k: p for k, p in campus_labels(logs).items() if k in owner}
    same_id = same_person = both = 0
    for a, b in itertools.combinations(sorted(person), 2):
        i, p = owner[a] == owner[b], person[a] == person[b]
        same_id, same_person, both = same_id + i, same_person + p, both + (i and p)
    precision, recall = both / max(same_id, 1), both / max(same_person, 1)
    return {"precision": precision, "recall": recall, "tracks": len(person),
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def _gate(on: bool) -> Callable[[PipelineConfig], PipelineConfig]:
    return lambda cfg: cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"ground_gate": on})})


def _embed_every_detection(cfg: PipelineConfig) -> PipelineConfig:
    """The config with the per-camera association embedding every detection of every frame (the detect stage
    before session 20), not only those appearance can decide."""
    d = cfg.detector
    return cfg.model_copy(update={"detector": d.model_copy(update={
        "appearance": d.appearance.model_copy(update={"refresh_s": 0.0})})})


def right_splits(run: dict, gt: Mapping[str, MotSequence], window_s: float = 2.0) -> int:
    """How many of the run's ``track.split`` events cut a track where its person changed: scored with the ground
    truth, most of its boxes in the ``window_s`` before the cut and most in the ``window_s`` after are two people (two
    people of the ground truth: a side that matches nobody does not count)."""
    right = 0
    for e in run["splits"]:
        log, t = run["logs"][e["camera_id"]], e["video_ts"]
        before = [f for f, ts in log.times.items() if t - window_s <= ts < t]
        after = [f for f, ts in log.times.items() if t <= ts < t + window_s]
        g = gt[e["camera_id"]]
        was, became = track_person(log.boxes, e["track_id"], g, before), track_person(log.boxes, e["part_track_id"],
                                                                                      g, after)
        right += was != became and was >= 0 and became >= 0
    return right


def _detect_fps(fps: float | None) -> Callable[[PipelineConfig], PipelineConfig]:
    """Every camera detects ``fps`` times a second instead of its config's rate (None: as configured)."""
    if fps is None:
        return lambda cfg: cfg
    return lambda cfg: cfg.with_detect_fps(fps)


def clip_rows(name: str, config: Path, gt_dir: Path, repeats: int, port: int, baseline: bool,
              detect_fps: float | None = None, embed_all: bool = False) -> list[dict]:
    """The clip's rows: the baseline (no appearance in the association, no ground gate) and the shipped config
    without its ground gate when asked, the shipped config embedding every detection when asked (``embed_all``),
    then the config as shipped; at ``detect_fps`` when given."""
    rows = []
    rate, at = _detect_fps(detect_fps), f" @{detect_fps:g}/s" if detect_fps else ""
    variants = [("baseline", False, _gate(False)), ("no gate", None, _gate(False))] if baseline else []
    variants += [("embed all", None, _embed_every_detection)] if embed_all else []
    for label, appearance, adjust in variants + [("", None, lambda cfg: cfg)]:
        scores = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tracks:
                run = replay(config, None, port, Path(tracks), appearance,
                             adjust=lambda cfg, adjust=adjust: rate(adjust(cfg)), logs=True)
                frames = read_frames(Path(tracks))
                gt = read_folder(gt_dir)
                run["right_splits"] = right_splits(run, gt)
                result = evaluate(read_folder(Path(tracks)), gt, frames)
                result["unfilled"] = evaluate(read_folder(Path(tracks) / UNFILLED), gt, frames)["mtmc_idf1"]
                bounds = loss_breakdown(run["raw"], gt, frames, linked=run["linked"])
            scores.append((run, result, bounds))
        med = lambda f, scores=scores: statistics.median(f(*x) for x in scores)  # noqa: E731
        cams = sorted(scores[0][1]["per_camera"])
        rows.append({
            "run": f"{name}{at} {label}".strip(), "ids": med(lambda r, s, b: s["num_ids"]),
            "people": scores[0][1]["num_gt_ids"], "mtmc_idf1": med(lambda r, s, b: s["mtmc_idf1"]),
            "unfilled": med(lambda r, s, b: s["unfilled"]),
            "cameras": cams,
            **{f"idf1_{c}": med(lambda r, s, b, c=c: s["per_camera"][c]["idf1"]) for c in cams},
            **{f"alone_{c}": med(lambda r, s, b, c=c: b["tracker_alone"]["per_camera"][c]) for c in cams},
            **{f"det_recall_{c}": med(lambda r, s, b, c=c: s["per_camera"][c]["det_recall"]) for c in cams},
            "track_bound": med(lambda r, s, b: b["track_bound"]["mtmc_idf1"]),
            "detection_bound": med(lambda r, s, b: b["detection_bound"]["mtmc_idf1"]),
            "splits": med(lambda r, s, b: len(r["splits"])), "right_splits": med(lambda r, s, b: r["right_splits"]),
            "rt": med(lambda r, s, b: r["rt"]), "same_as_first": None})
    base = rows[0]["rt"]
    for r in rows:
        r["ratio"] = r["rt"] / base
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/mtmc_accuracy.py", description=__doc__.split("\n")[0])
    p.add_argument("--clips", nargs="*", choices=sorted(CLIPS), default=list(CLIPS),
                   help="annotated clips to run (none: campus4 only)")
    p.add_argument("--campus", type=Path, default=PROJECT_ROOT / "configs" / "cams.example.yaml")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-campus", action="store_true", help="the annotated clips only")
    p.add_argument("--skip-baseline", action="store_true", help="only the shipped config's row per clip")
    p.add_argument("--detect-fps", type=float, default=None,
                   help="run the annotated clips' cameras at this detection rate instead of their configs' (5/s)")
    p.add_argument("--embed-all-row", action="store_true",
                   help="also run each clip with every detection embedded for the association "
                        "(detector.appearance.refresh_s 0), before the shipped row: the cost's before and after")
    p.add_argument("--port", type=int, default=5597)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    setup_logging(30)
    rows = []
    for name in args.clips:
        config, folder = CLIPS[name]
        rows += clip_rows(name, PROJECT_ROOT / "configs" / config, shared_root() / "video" / folder / "gt",
                          args.repeats, args.port, not args.skip_baseline, args.detect_fps, args.embed_all_row)
    if not args.skip_campus:
        first, base = None, None
        for speed in (None, 1.0):
            runs = [replay(args.campus, speed, args.port, logs=True) for _ in range(args.repeats)]
            first = first or runs[0]["decisions"]
            rt = statistics.median(r["rt"] for r in runs)
            base = base or rt
            rows.append({"run": f"campus4 {'max' if speed is None else '1'}",
                         "ids": statistics.median(r["ids"] for r in runs), "people": "~5", "rt": rt,
                         "splits": statistics.median(len(r["splits"]) for r in runs),
                         "ratio": rt / base, "same_as_first": all(r["decisions"] == first for r in runs),
                         "pairs": campus_pairs(runs[0]["owners"], runs[0]["logs"])})
    print(f"Cross-camera identity accuracy, median of {args.repeats} run(s) per row; {platform.machine()} CPU "
          f"x{os.cpu_count()}; IDF1 at IoU 0.5 on the frames the detector ran on; alone = the per-camera tracker's "
          f"own ids; unfilled = MTMC IDF1 of the detected boxes alone (no gap filled); "
          f"bounds = MTMC IDF1 with perfect linking of these tracks / perfect tracking of these boxes; "
          f"RT = video s per wall s; ratio = RT / the clip's first row's; same = every decision equal to the first "
          f"campus run's; campus4 (hand-labelled tracks): MTMC = pair F1, IDF1 = pair precision/recall")
    head = f"{'run':<24}{'ids':>5}{'people':>7}{'MTMC':>7}{'unfilled':>9}{'IDF1 c0/c1':>13}{'alone c0/c1':>13}"
    head += f"{'det rec c0/c1':>15}"
    print(head + f"{'track bnd':>10}{'det bnd':>9}{'splits':>7}{'RT':>7}{'ratio':>7}{'same':>6}")
    for r in rows:
        line = f"{r['run']:<24}{r['ids']:>5.0f}{str(r['people']):>7}"
        if "mtmc_idf1" in r:
            pair = lambda key, r=r: "/".join(f"{r[f'{key}_{c}']:.3f}" for c in r["cameras"])  # noqa: E731
            line += f"{r['mtmc_idf1']:>7.3f}{r['unfilled']:>9.3f}{pair('idf1'):>13}{pair('alone'):>13}"
            line += f"{pair('det_recall'):>15}"
            line += f"{r['track_bound']:>10.3f}{r['detection_bound']:>9.3f}"
        elif r.get("pairs"):
            q = r["pairs"]
            pr = f"{q['precision']:.3f}/{q['recall']:.3f}"
            line += f"{q['f1']:>7.3f}{'':>9}{pr:>13}" + " " * 47
        else:
            line += " " * 76
        same = {None: "-", True: "yes", False: "NO"}[r["same_as_first"]]
        splits = f"{r['right_splits']:.0f}/{r['splits']:.0f}" if "right_splits" in r else f"{r['splits']:.0f}"
        print(line + f"{splits:>7}{r['rt']:>7.2f}{r['ratio']:>7.2f}{same:>6}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
