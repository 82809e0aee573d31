"""Cross-camera identity accuracy: the annotated EPFL terrace1 views, and the campus4 identity count at two speeds.

    python benchmarks/mtmc_accuracy.py [--repeats 1] [--skip-campus]

Replays ``configs/terrace1.yaml`` (two overlapping, calibrated views, six people, 60 s) at full speed, writes its
tracks (``--tracks-out``) and scores them with ``pipeline.evaluate_mtmc`` against the shared ground truth; then
replays the three campus4 views of ``configs/cams.example.yaml`` (80 s, no calibration, about four people) at
``--speed max`` and at recorded pace and counts the identities minted, which must not depend on the speed.
Prints one table: per row the median over ``--repeats`` runs, each in a fresh run directory (a fresh Redis).
The real-time factor (video seconds per wall second, from the sources' start to the last decision; model loading
excluded) is the throughput; ratio = this row's / the first campus row's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.evaluate_mtmc import evaluate, read_folder, read_frames  # noqa: E402
from pipeline.supervisor import Supervisor  # noqa: E402
from pipeline.tracks_out import write_tracks  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402


def replay(config_path: Path, speed: float | None, port: int, tracks_out: Path | None = None) -> dict:
    """One replay in a fresh run directory: identities, events (deterministic view), wall time, tracks."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config_path).with_run_dir(Path(tmp))
        cfg = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(
            update={"events": f"tcp://127.0.0.1:{port}"})})
        sup = Supervisor(cfg, replay=True, speed=speed, status=False, track_log=tracks_out is not None)
        code = sup.run()
        match = next(p for p in sup.procs if p.kind == "match")
        wall = (match.done_at or time.monotonic()) - sup.t0  # sources started -> last decision made
        if code != 0:
            raise SystemExit(f"replay of {config_path} failed with exit code {code}")
        events = list(sup.recorder.spilled())
        if tracks_out is not None:
            write_tracks(cfg.resolved_run_dir, [c.id for c in cfg.cameras], events, tracks_out)
        duration = max(e["video_ts"] for e in events) if events else float("nan")
        decisions = sorted((e["camera_id"], e["track_id"], e["global_id"]) for e in events
                           if e["kind"] != "track.ended")
        return {"ids": len({e["global_id"] for e in events if e.get("global_id") is not None}),
                "wall_s": wall, "rt": duration / wall, "decisions": decisions}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/mtmc_accuracy.py", description=__doc__.split("\n")[0])
    p.add_argument("--terrace", type=Path, default=PROJECT_ROOT / "configs" / "terrace1.yaml")
    p.add_argument("--campus", type=Path, default=PROJECT_ROOT / "configs" / "cams.example.yaml")
    p.add_argument("--gt", type=Path, default=shared_root() / "video" / "epfl_terrace1" / "gt")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-campus", action="store_true", help="terrace1 only")
    p.add_argument("--port", type=int, default=5597)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = p.parse_args(argv)
    setup_logging(30)
    rows = []
    scores = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tracks:
            run = replay(args.terrace, None, args.port, Path(tracks))
            result = evaluate(read_folder(Path(tracks)), read_folder(args.gt), read_frames(Path(tracks)))
        scores.append((run, result))
    med = lambda f: statistics.median(f(r, s) for r, s in scores)  # noqa: E731
    cams = sorted(scores[0][1]["per_camera"])
    rows.append({"run": "terrace1 max", "ids": med(lambda r, s: s["num_ids"]), "people": scores[0][1]["num_gt_ids"],
                 "mtmc_idf1": med(lambda r, s: s["mtmc_idf1"]),
                 **{f"idf1_{c}": med(lambda r, s, c=c: s["per_camera"][c]["idf1"]) for c in cams},
                 **{f"det_recall_{c}": med(lambda r, s, c=c: s["per_camera"][c]["det_recall"]) for c in cams},
                 "rt": med(lambda r, s: r["rt"]), "same_as_first": None})
    if not args.skip_campus:
        first = None
        for speed in (None, 1.0):
            runs = [replay(args.campus, speed, args.port) for _ in range(args.repeats)]
            first = first or runs[0]["decisions"]
            rows.append({"run": f"campus4 {'max' if speed is None else '1'}",
                         "ids": statistics.median(r["ids"] for r in runs), "people": "~4",
                         "rt": statistics.median(r["rt"] for r in runs),
                         "same_as_first": all(r["decisions"] == first for r in runs)})
    base = next((r["rt"] for r in rows if r["run"].startswith("campus4")), rows[0]["rt"])
    print(f"Cross-camera identity accuracy, median of {args.repeats} run(s) per row; {platform.machine()} CPU "
          f"x{os.cpu_count()}; IDF1 at IoU 0.5 on the frames the detector ran on; RT = video s per wall s; "
          f"ratio = RT / first campus row's; same = every decision equal to the first campus run's")
    head = f"{'run':<14}{'ids':>5}{'people':>7}{'MTMC IDF1':>10}"
    head += "".join(f"{'IDF1 ' + c:>9}{'det rec ' + c:>11}" for c in cams)
    print(head + f"{'RT':>7}{'ratio':>7}{'same':>6}")
    for r in rows:
        line = f"{r['run']:<14}{r['ids']:>5.0f}{str(r['people']):>7}"
        line += f"{r['mtmc_idf1']:>10.3f}" if "mtmc_idf1" in r else f"{'':>10}"
        for c in cams:
            line += (f"{r[f'idf1_{c}']:>9.3f}{r[f'det_recall_{c}']:>11.3f}" if f"idf1_{c}" in r else f"{'':>20}")
        same = {None: "-", True: "yes", False: "NO"}[r["same_as_first"]]
        print(line + f"{r['rt']:>7.2f}{r['rt'] / base:>7.2f}{same:>6}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
