"""ZeroMQ CURVE on the pipeline's sockets: the event publisher always (when configured), stage sockets on tcp.

Why tcp only for stages: an ipc:// socket is a file in the run directory, guarded by its permissions; a tcp
endpoint (stages on other hosts, ``run_pipeline.py --stage``) is reachable by anyone on the network, so with
``endpoints.curve`` set it authenticates and encrypts. The binding side of a socket is the CURVE server (the
run's server key pair, admitting only the public keys in ``authorized_keys_dir``); the connecting side is a
client with the pipeline's own key pair. A peer without an admitted key completes no handshake: ZeroMQ drops
it before any message reaches the stage.
"""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipeline.config import CurveConfig


def needs_curve(endpoint: str, curve: CurveConfig | None) -> bool:
    """True when a stage socket on ``endpoint`` must use CURVE: it is configured and the endpoint is tcp."""
    return curve is not None and endpoint.startswith("tcp://")


class CurveGuard:
    """One ZAP authenticator per ZeroMQ context, started with the first server socket that needs it."""

    def __init__(self, ctx: zmq.Context, curve: CurveConfig | None) -> None:
        self.ctx = ctx
        self.curve = curve
        self.auth: ThreadAuthenticator | None = None

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it binds) a CURVE server that admits only the authorised public keys."""
        assert self.curve is not None
        if self.auth is None:
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(self.curve.authorized_keys_dir))
        public, secret = zmq.auth.load_certificate(str(self.curve.server_secret_key))
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it connects) a CURVE client with the pipeline's key pair."""
        assert self.curve is not None
        curve_client(sock, self.curve.client_secret_key, self.curve.server_secret_key)

    def bind(self, sock: zmq.Socket, endpoint: str, always: bool = False) -> None:
        """Bind ``sock``, as a CURVE server where :func:`needs_curve` (or ``always`` with CURVE configured)."""
        if self.curve is not None and (always or needs_curve(endpoint, self.curve)):
            self.server(sock)
        sock.bind(endpoint)

    def connect(self, sock: zmq.Socket, endpoint: str, always: bool = False) -> None:
        """Connect ``sock``, as a CURVE client where :func:`needs_curve` (or ``always`` with CURVE configured)."""
        if self.curve is not None and (always or needs_curve(endpoint, self.curve)):
            self.client(sock)
        sock.connect(endpoint)

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def curve_client(sock: zmq.Socket, client_secret_key: Path, server_key: Path) -> None:
    """Make ``sock`` a CURVE client with its key pair, trusting the server's public key (read from either of
    the server's key files)."""
    public, secret = zmq.auth.load_certificate(str(client_secret_key))
    server_public, _ = zmq.auth.load_certificate(str(server_key))
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
