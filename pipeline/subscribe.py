"""Print identity events as JSON lines.

    python -m pipeline.subscribe [ENDPOINT] [--camera ID] [--kind KIND] [--count N] [--timeout S]

ENDPOINT defaults to tcp://127.0.0.1:5560. A jump in ``seq`` means events were missed; it is reported on
stderr as a gap.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

import zmq

from pipeline.events import KINDS, decode_event
from pipeline.security import curve_client
from reid.log import setup_logging

log = logging.getLogger("pipeline.subscribe")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.subscribe", description=__doc__.split("\n")[0])
    p.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5560")
    p.add_argument("--camera", default=None, help="only events of this camera")
    p.add_argument("--kind", choices=KINDS, default=None, help="only events of this kind")
    p.add_argument("--count", type=int, default=None, help="exit after N events")
    p.add_argument("--timeout", type=float, default=None, help="exit after S seconds without an event")
    p.add_argument("--server-key", default=None, help="CURVE: the publisher's public key file (server.key)")
    p.add_argument("--client-key", default=None, help="CURVE: this subscriber's secret key file (NAME.key_secret)")
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    # Ctrl-C stops the subscriber even when it was started from a shell that ignores SIGINT (a background job of
    # a script): Python leaves an inherited "ignore" in place, and the subscriber would never stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, (args.kind or "").encode())
    if args.server_key or args.client_key:
        if not (args.server_key and args.client_key):
            log.error("CURVE needs both --server-key and --client-key")
            return 2
        curve_client(sub, args.client_key, args.server_key)
    sub.connect(args.endpoint)
    n, last_seq, last_event = 0, None, time.monotonic()
    try:
        while args.count is None or n < args.count:
            if not sub.poll(200):
                if args.timeout is not None and time.monotonic() - last_event > args.timeout:
                    break
                continue
            try:
                event = decode_event(sub.recv_multipart())
            except ValueError as e:
                log.warning("ignored a malformed message: %s", e)
                continue
            last_event = time.monotonic()
            seq = event.get("seq")
            if args.kind is None and last_seq is not None and isinstance(seq, int) and seq != last_seq + 1:
                log.warning("gap: missed events %d..%d", last_seq + 1, seq - 1)
            last_seq = seq if isinstance(seq, int) else last_seq
            if args.camera and event.get("camera_id") != args.camera:
                continue
            print(json.dumps(event), flush=True)
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
