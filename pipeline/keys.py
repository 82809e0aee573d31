"""Generate ZeroMQ CURVE key pairs for the identity-event socket.

    python -m pipeline.keys DIR [--client NAME ...]

Writes ``DIR/server.key`` (public) and ``DIR/server.key_secret`` (keep it private: the match stage's PUB
socket uses it), ``DIR/pipeline.key[_secret]`` (the supervisor's own subscriber) and one pair per ``--client``;
the public keys of the clients (and of ``pipeline``) go to ``DIR/authorized/``. Point ``endpoints.curve`` of the
config at these files; give each client its ``NAME.key_secret`` and ``server.key``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import zmq.auth


def generate(folder: Path, clients: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    authorized = folder / "authorized"
    authorized.mkdir(exist_ok=True)
    written = []
    for name in ["server", "pipeline", *clients]:
        public, secret = zmq.auth.create_certificates(str(folder), name)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
        if name != "server":
            shutil.copy(public, authorized / Path(public).name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.keys", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--client", action="append", default=[], help="name of a subscriber to authorise (repeatable)")
    args = p.parse_args(argv)
    if not zmq.has("curve"):
        print("this libzmq has no CURVE support", file=sys.stderr)
        return 2
    for path in generate(args.folder, args.client):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
