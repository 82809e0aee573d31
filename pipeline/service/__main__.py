"""Serve a finished run: its web page, identities, search, camera snapshots and calibration page.

    python -m pipeline.service --cameras cams.yaml [--run-dir runs/NAME] [--http 127.0.0.1:8080] [--redis URL]

A running pipeline serves itself (``run_pipeline.py --http``); once it has ended, its identities are still in the
run directory's Redis data and its snapshots on disk. This starts that Redis (on a free port, stopped at exit;
refused while the pipeline still holds it) and the same service, until Ctrl-C. A run that used an external Redis
(the config's ``matcher.redis.url``, or ``--redis``) is read from there instead. ``/metrics`` belongs to a running
pipeline and answers 404 here. The calibration page (``/calibrate``) writes its matrices next to ``--cameras``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("pipeline.service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.service", description=__doc__.split("\n")[0])
    p.add_argument("--cameras", type=Path, required=True, help="the run's pipeline YAML (cameras, reid, gallery)")
    p.add_argument("--run-dir", type=Path, default=None, help="the run directory (default: the config's)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="where to listen (default: the config's http section, else 127.0.0.1:8080)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="the run's external Redis (default: the config's matcher.redis.url, else its embedded one)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import redis

    from pipeline.config import ConfigError, load_config
    from pipeline.search import redis_for
    from pipeline.service.config import HttpConfig
    from pipeline.service.server import start_service
    from reid.identity.store import connect
    from reid.log import setup_logging

    setup_logging()

    try:
        config = load_config(args.cameras)
        if args.run_dir:
            config = config.with_run_dir(args.run_dir.resolve())
        if config.http is None:
            config = config.model_copy(update={"http": HttpConfig()})
        if args.http:
            config = config.with_http(args.http)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    run_dir = config.resolved_run_dir
    if not run_dir.is_dir():
        log.error("%s: no such run directory (run the pipeline first, or pass --run-dir)", run_dir)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with redis_for(config.matcher.redis, run_dir, args.redis or config.matcher.redis.url) as url:
            # Fail here, not on every request; with the store's own connection code (password, ACL user, TLS), but
            # no retries: a wrong URL is an answer now, not after the backoff meant for a Redis restarting.
            with connect(config.matcher.redis.model_copy(update={"retry_attempts": 0}), url) as client:
                client.ping()
            service, store = start_service(config, config.http, url, None,
                                           lambda: {"run": "finished", "run_dir": str(run_dir)}, args.cameras)
            try:
                log.info("serving the finished run %s on %s (Ctrl-C stops)", run_dir, service.url)
                while not stop.wait(0.5):
                    if not service.thread.is_alive():
                        log.error("the HTTP service stopped")
                        return 1
            finally:
                service.stop()
                store.close()
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2
    except (RuntimeError, ValueError, redis.RedisError) as e:
        # the embedded Redis refused (folder in use, broken data), a bad or unreachable URL, the port taken
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
