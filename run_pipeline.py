"""Run the multi-camera re-identification pipeline.

    python run_pipeline.py --cameras configs/cams.example.yaml [--replay] [--speed 1|max] [--duration S]
        [--events-out events.jsonl] [--save-video DIR] [--tracks-out DIR] [--validate-config]
        [--stage NAME [--camera ID]]
        [--stats-every S]

Identity events are published on the configured PUB socket (default tcp://127.0.0.1:5560); watch them with
``python -m pipeline.subscribe tcp://127.0.0.1:5560``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

STAGES = ("source", "detect", "embed", "match")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python run_pipeline.py", description=__doc__.split("\n")[0])
    p.add_argument("--cameras", type=Path, required=True, help="pipeline YAML (cameras, detector, reid, matcher)")
    p.add_argument("--replay", action="store_true", help="replay recorded files with video time, never dropping")
    p.add_argument("--speed", default="1", help="replay pace: 1 = recorded pace, 2 = twice as fast, max = no pacing")
    p.add_argument("--duration", type=float, default=None, help="replay only the first S seconds of every camera")
    p.add_argument("--events-out", type=Path, default=None, help="also write the identity events to a JSONL file")
    p.add_argument("--save-video", type=Path, default=None,
                   help="write each camera's annotated video (boxes labelled with global ids) to this folder")
    p.add_argument("--tracks-out", type=Path, default=None,
                   help="write each camera's tracks labelled with global ids as MOTChallenge files to this folder "
                        "(docs/tracks.md; score them with python -m pipeline.evaluate_mtmc)")
    p.add_argument("--run-dir", type=Path, default=None, help="override the config's run directory")
    p.add_argument("--validate-config", action="store_true", help="check the config and its files, then exit")
    p.add_argument("--stage", choices=STAGES, default=None, help="run one stage alone (multi-host deployments)")
    p.add_argument("--camera", default=None, help="with --stage source: which camera")
    p.add_argument("--stats-every", type=float, default=None, metavar="S",
                   help="seconds between each stage's own INFO line (fps, load, latency, drops; default 10)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--no-status", action="store_true", help="no live status line")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve the API, metrics and web page (overrides the config's http host and port)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipeline.config import ConfigError, load_config
    from pipeline.stage import LOG_EVERY_S, LOG_LEVEL_ENV
    from pipeline.supervisor import PipelineError, Supervisor, check_sources
    from reid.log import setup_logging

    setup_logging(getattr(logging, args.log_level))
    os.environ[LOG_LEVEL_ENV] = args.log_level  # the stage processes log at the same level
    log = logging.getLogger("run_pipeline")
    try:
        speed = None if args.speed == "max" else float(args.speed)
        if speed is not None and speed <= 0:
            raise ValueError
    except ValueError:
        log.error("--speed must be a positive number or 'max', got %r", args.speed)
        return 2
    if args.stats_every is None:
        args.stats_every = LOG_EVERY_S
    elif args.stats_every <= 0:
        log.error("--stats-every must be a positive number of seconds, got %g", args.stats_every)
        return 2
    try:
        config = load_config(args.cameras)
        if args.run_dir:
            config = config.with_run_dir(args.run_dir.resolve())
        if args.http:
            config = config.with_http(args.http)
        check_sources(config)
    except (ConfigError, PipelineError) as e:
        log.error("%s", e)
        return 2
    if args.validate_config:
        print(f"{args.cameras}: OK ({len(config.cameras)} cameras, run directory {config.resolved_run_dir})")
        return 0
    if args.stage:
        return run_single_stage(config, args)
    supervisor = Supervisor(config, replay=args.replay, speed=speed, duration_s=args.duration,
                            events_out=args.events_out, status=not args.no_status,
                            stage_log_every_s=args.stats_every,
                            track_log=bool(args.save_video or args.tracks_out), config_path=args.cameras)
    try:
        code = supervisor.run()
    except PipelineError as e:
        log.error("%s", e)
        return 1
    # The events read back from the run directory (once): all of a full replay, not just the latest in memory.
    events = list(supervisor.recorder.spilled()) if args.save_video or args.tracks_out else []
    if args.save_video:
        from pipeline.render import render_floor, render_videos

        for path in render_videos(config, events, args.save_video, duration_s=args.duration):
            log.info("wrote %s", path)
        floor = render_floor(config, events, args.save_video / "floor.png")
        if floor is not None:
            log.info("wrote %s", floor)
    if args.tracks_out:
        from pipeline.gaps import GapFiller
        from pipeline.tracks_out import write_tracks

        recorded = [c.id for c in config.cameras if c.id in supervisor.recorder.spill_cameras]
        for path in write_tracks(config.resolved_run_dir, recorded, events, args.tracks_out,
                                 filler=GapFiller.from_config(config)):
            log.info("wrote %s", path)
    return code


def run_single_stage(config, args) -> int:
    from pipeline.stage import run_stage

    speed = None if args.speed == "max" else float(args.speed)
    every = args.stats_every
    if args.stage == "source":
        from pipeline.source_stage import SourceStage

        if args.camera not in {c.id for c in config.cameras}:
            logging.getLogger("run_pipeline").error("--stage source needs --camera, one of %s",
                                                    [c.id for c in config.cameras])
            return 2
        return run_stage(SourceStage(config, camera_id=args.camera, replay=args.replay, speed=speed,
                                     duration_s=args.duration, log_every_s=every))
    if args.stage == "detect":
        from pipeline.detect_stage import DetectStage

        return run_stage(DetectStage(config, log_every_s=every))
    if args.stage == "embed":
        from pipeline.embed_stage import EmbedStage

        return run_stage(EmbedStage(config, log_every_s=every))
    from pipeline.match_stage import MatchStage
    from reid.identity.redis_server import redis_url_for

    with redis_url_for(config.matcher.redis) as url:
        return run_stage(MatchStage(config, redis_url=url, log_every_s=every))


if __name__ == "__main__":
    sys.exit(main())
