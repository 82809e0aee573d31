"""Does ``python -m pipeline.site_check`` find a site's ground rules without ground truth?

    python benchmarks/site_check_accuracy.py [--clips terrace1 crowd] [--repeats 1]

For each annotated terrace1 clip: runs the site check (which reads no ground truth) and prints its suggestions
beside the distributions measured from the ground truth (the same person's feet seen from both views, and two
different people at the same moment, as 2-s window medians in the homographies' units: the suggestions must
separate them), then replays the pipeline with the config as shipped, with the suggested ``geometry`` values and
cameras' ``ground_offset`` (from this clip alone), and with those plus the cross-view equal-error threshold the
check reports but does not suggest (this row is why), scoring each with ``pipeline.evaluate_mtmc`` (MTMC IDF1 and
identities; the shipped row is the baseline, measured in the same run). One table; medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mtmc_accuracy import CLIPS, replay  # noqa: E402
from pipeline.config import PipelineConfig, load_config  # noqa: E402
from pipeline.evaluate_mtmc import evaluate, read_folder, read_frames  # noqa: E402
from pipeline.site_check.__main__ import main as site_check  # noqa: E402
from pipeline.site_check.evidence import window_distances  # noqa: E402
from reid.adapt.harvest import HarvestedTrack  # noqa: E402
from reid.identity.geometry import GeometryConfig, foot_points  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402

GT_FPS = 25.0


def gt_distances(config: PipelineConfig, gt_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Window medians of the ground-truth boxes' feet: the same person in two views, and two different people seen
    at the same moment (any views)."""
    tracks: list[HarvestedTrack] = []
    for cam in config.cameras:
        seq = read_folder(gt_dir)[cam.id]
        h = cam.ground()
        by_id: dict[int, HarvestedTrack] = {}
        for frame in sorted(seq.ids):
            ids, boxes = seq.at(frame)
            xyxy = np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]]
            g, _ = h.project(foot_points(xyxy))
            for i, pid in enumerate(ids.tolist()):
                t = by_id.setdefault(pid, HarvestedTrack("gt", cam.id, pid))
                t.ts.append((frame - 1) / GT_FPS)
                t.ground.append((float(g[i, 0]), float(g[i, 1])))
        tracks += by_id.values()
    same, different = [], []
    for a, b in itertools.combinations(tracks, 2):
        if a.track_id == b.track_id and a.camera_id != b.camera_id:
            same += [w[1] for w in window_distances(a, b)]
        elif a.track_id != b.track_id:
            different += [w[1] for w in window_distances(a, b)]
    return np.array(same), np.array(different)


def score(config_path: Path, gt_dir: Path, port: int, repeats: int, adjust=None) -> dict:  # noqa: ANN001
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tracks:
            replay(config_path, None, port, Path(tracks), adjust=adjust)
            result = evaluate(read_folder(Path(tracks)), read_folder(gt_dir), read_frames(Path(tracks)))
        runs.append((result["mtmc_idf1"], result["num_ids"]))  # identities in the delivered tracks
    return {"mtmc": statistics.median(r[0] for r in runs), "ids": statistics.median(r[1] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/site_check_accuracy.py", description=__doc__.split("\n")[0])
    p.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=list(CLIPS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--port", type=int, default=5598)
    args = p.parse_args(argv)
    setup_logging()
    rows = []
    for name in args.clips:
        cfg_name, data = CLIPS[name]
        config_path = PROJECT_ROOT / "configs" / cfg_name
        gt_dir = shared_root() / "video" / data / "gt"
        config = load_config(config_path)
        with tempfile.TemporaryDirectory() as out:
            if site_check(["--cameras", str(config_path), "--out", out]) != 0:
                raise SystemExit(f"site check of {config_path} failed")
            report = json.loads((Path(out) / "site_check.json").read_text())
        sug = {k: v["value"] for k, v in report["suggestions"].items()}
        if None in sug.values():
            raise SystemExit(f"{name}: the site check measured no {[k for k, v in sug.items() if v is None]}: "
                             f"{report['suggestions']}")
        same, diff = gt_distances(config, gt_dir)
        truth = {"same_p50": np.median(same), "same_p95": np.percentile(same, 95),
                 "diff_p5": np.percentile(diff, 5)}
        geo = {k: sug[k] for k in ("same_place", "different_place", "max_speed")}
        # each camera's offset as suggested: a new one, or the configured one kept
        offsets = {c: o["value"] if o["value"] is not None else o["configured"]
                   for c, o in report["ground_offsets"].items() if (o["value"] or o["configured"]) is not None}

        def suggested_geometry(c: PipelineConfig, geo=geo, offsets=offsets) -> PipelineConfig:  # noqa: ANN001
            cams = [cam.model_copy(update={"ground_offset": tuple(offsets[cam.id])}) if cam.id in offsets else cam
                    for cam in c.cameras]
            return c.model_copy(update={"cameras": cams, "geometry": GeometryConfig.model_validate(
                {**c.geometry.model_dump(), **geo})})

        eer = report["evidence"]["appearance"]["cross_view_equal_error"]

        def suggested_all(c: PipelineConfig, thr=eer) -> PipelineConfig:  # noqa: ANN001
            c = suggested_geometry(c)
            return c.model_copy(update={"matcher": c.matcher.model_copy(update={"threshold": thr})})

        base = score(config_path, gt_dir, args.port, args.repeats)
        g = config.geometry
        shipped = {c.id: c.ground_offset for c in config.cameras if c.ground_offset is not None}
        variants = [("shipped", (g.same_place, g.different_place, g.max_speed, config.matcher.threshold), shipped,
                     base),
                    ("suggested geometry and offsets", (*geo.values(), config.matcher.threshold), offsets,
                     score(config_path, gt_dir, args.port, args.repeats, suggested_geometry)),
                    ("suggested + equal-error threshold", (*geo.values(), eer), offsets,
                     score(config_path, gt_dir, args.port, args.repeats, suggested_all))]
        for label, values, offs, s in variants:
            separates = values[0] < truth["diff_p5"] and values[1] > truth["same_p95"]
            shown = ", ".join(f"{c} ({v[0]:.3g}, {v[1]:.3g})" for c, v in sorted(offs.items())) or "none"
            rows.append((name, label, *values, shown, separates, s["mtmc"], s["mtmc"] - base["mtmc"], s["ids"]))
        print(f"{name} ground truth: same person median {truth['same_p50']:.1f}, p95 {truth['same_p95']:.1f} "
              f"(n={len(same)}); different people p5 {truth['diff_p5']:.1f} (n={len(diff)})", flush=True)
    head = ("clip", "values", "same_place", "different_place", "max_speed", "threshold", "ground_offset",
            "separates GT", "MTMC IDF1", "vs shipped", "ids")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.3g} | {r[5]:.2f} | {r[6]} | "
              f"{'yes' if r[7] else 'no'} | {r[8]:.3f} | {r[9]:+.3f} | {r[10]:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
