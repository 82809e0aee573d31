"""Measure a site's ground rules and appearance threshold from its own unlabeled video.

    python -m pipeline.site_check --cameras cams.yaml [--cameras more.yaml ...] [--duration S] [--out DIR]

Replays the recorded cameras through the pipeline's detector and tracker (as ``reid.adapt`` does), then measures,
without any ground truth: the ground distance between co-visible tracks of overlapping calibrated views (the
same-person mode against different people), the tracks' walking paces, and the appearance similarity of tracks
that are one person against co-visible tracks that are two. Prints the suggested ``geometry`` values (in the
calibration's units) with the evidence, how the configured ``matcher.threshold`` fares on the site's pairs, the
config lines to paste, and warnings where a calibration looks wrong; writes ``site_check.png`` (the
distributions) and ``site_check.json`` to ``--out`` (default: the first config's run directory, ``site_check/``,
where the service's calibration page shows it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("pipeline.site_check")

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.site_check", description=__doc__.split("\n")[0])
    p.add_argument("--cameras", type=Path, action="append", required=True,
                   help="pipeline config of recorded video of the site (repeat for several recordings)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="use the first S seconds of each video")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of site_check.png and site_check.json (default: the first config's run directory's "
                        "site_check/, which the calibration page shows)")
    return p.parse_args(argv)


def site_offsets(paths: list[Path], configs: list) -> dict[str, tuple[float, float] | None]:  # noqa: ANN001
    """Each camera's configured ``ground_offset``, the same in every recording's config: the recordings' ground
    positions include it, and the measured shift is pooled over them, so configs that disagree are refused."""
    out: dict[str, tuple[float, float] | None] = {}
    seen_in: dict[str, Path] = {}
    for path, cfg in zip(paths, configs, strict=True):
        for cam in cfg.cameras:
            if cam.id in out and out[cam.id] != cam.ground_offset:
                raise ValueError(f"{path}: camera {cam.id}'s ground_offset {cam.ground_offset} differs from "
                                 f"{out[cam.id]} in {seen_in[cam.id]}: the recordings of one site share one "
                                 "calibration")
            out[cam.id], seen_in[cam.id] = cam.ground_offset, path
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from pipeline.config import ConfigError, load_config
    from pipeline.site_check import REPORT_FOLDER, REPORT_JSON, REPORT_PNG
    from pipeline.site_check.plots import write_plots
    from pipeline.site_check.report import CROPS_PER_TRACK, check, sig
    from reid.adapt.harvest import HarvestError, harvest_all
    from reid.log import setup_logging

    setup_logging()
    try:
        configs = [load_config(c) for c in args.cameras]
        offsets_now = site_offsets(args.cameras, configs)
        recordings = harvest_all(args.cameras, args.duration, max_crops_per_track=CROPS_PER_TRACK)
    except (ConfigError, HarvestError, FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    first = configs[0]
    units = first.geometry.unit_name if first.geometry is not None else "units"
    if not any(h is not None for r in recordings for h in r.cameras.values()):
        log.warning("no camera has a homography: nothing on the ground can be measured (calibrate with "
                    "python -m pipeline.calibrate or the service's /calibrate page)")
    result = check(recordings, first.reid.build_embedder(), first.matcher.threshold, offsets_now)
    suggestions = result.suggestions
    out = args.out or first.resolved_run_dir / REPORT_FOLDER
    png = write_plots(out / REPORT_PNG, result.ground, result.fit, suggestions, result.appearance, units)
    now = {"same_place": first.geometry.same_place if first.geometry else None,
           "different_place": first.geometry.different_place if first.geometry else None,
           "max_speed": first.geometry.max_speed if first.geometry else None, "threshold": first.matcher.threshold}
    report = {"configs": [str(c) for c in args.cameras], "units": units,
              "tracks": sum(len(r.tracks) for r in recordings),
              "video_s": {r.name: r.duration_s for r in recordings},
              "suggestions": {k: {"value": None if s.value is None else sig(s.value), "why": s.why,
                                  "configured": now[k]} for k, s in suggestions.items()},
              "ground_offsets": {c: {"value": None if o.value is None else [sig(v) for v in o.value], "why": o.why,
                                     "configured": offsets_now.get(c)} for c, o in result.offsets.items()},
              "evidence": result.evidence_summary(), "warnings": result.warnings,
              "config_lines": result.config_lines(first.geometry.units if first.geometry else None), "plot": str(png)}
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2))

    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets the evidence on one line
    table = Table(title=f"site check: {', '.join(r.name for r in recordings)} ({report['tracks']} tracks)")
    for col in ("setting", "suggested", "configured now", "evidence"):
        table.add_column(col, overflow="fold")
    for k, s in suggestions.items():
        unit = {"max_speed": f" {units}/s", "threshold": ""}.get(k, f" {units}")
        table.add_row("matcher.threshold" if k == "threshold" else f"geometry.{k}",
                      "-" if s.value is None else f"{sig(s.value)}{unit}",
                      "-" if now[k] is None else f"{now[k]}{unit}", s.why)
    for cam, o in sorted(result.offsets.items()):
        table.add_row(f"cameras.{cam}.ground_offset",
                      "keep" if o.value is None else f"[{sig(o.value[0])}, {sig(o.value[1])}] {units}",
                      "-" if offsets_now.get(cam) is None else f"{list(offsets_now[cam])} {units}", o.why)
    console.print(table)
    for w in result.warnings:
        log.warning("%s", w)
    lines = report["config_lines"] or "(nothing measured: replay more video, see the evidence column)"
    console.print(f"plots: {png}\nreport: {out / REPORT_JSON}\nthe geometry section to use (replacing the config's), "
                  f"and the cameras' ground offsets:\n{lines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
