"""Identity state in Redis: global ids, prototypes, indexes, expiry, and a change log for matcher workers.

Why Redis holds it: the matcher process may restart or run as several workers, and none of them may lose or
duplicate an identity. Every write is atomic on the server:

- a new identity is minted by a Lua script that first claims the per-track key with the same check-and-set, so
  two workers given the same track get the same global id and the counter moves once;
- an update is an optimistic transaction (WATCH the track key and the identity, read, merge in Python, MULTI/EXEC,
  retry on conflict), so concurrent updates of one identity are applied one after the other, never lost;
- expiry deletes an identity with its track keys and index entry in one Lua script.

Keys, all under an optional namespace prefix (``<ns>:``), take the form ``reid:<kind>:<id>``:

| key | type | holds |
|---|---|---|
| ``reid:counter:global_id`` | string | last global id minted |
| ``reid:identity:<gid>`` | hash | one identity (see :func:`encode_identity`) |
| ``reid:track:<camera_id>:<track_id>`` | string | the global id that owns a per-camera track |
| ``reid:tracks:<gid>`` | set | that identity's track keys (deleted with it) |
| ``reid:index:last_seen`` | zset | gid -> last seen (track time, s): the gallery load and expiry |
| ``reid:log:changes`` | stream | ``gid, rev, op`` per write, so other workers refresh only what changed |
| ``reid:timeline:<gid>`` | hash | its appearances (:mod:`reid.identity.album`), deleted with it |
| ``reid:thumbs:<gid>`` | hash | its thumbnails, deleted with it |
| ``reid:index:album`` | zset | gid -> last seen of the identities with an album |

The Lua scripts build identity and track-set key names from the new global id, so the store targets one Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, BusyLoadingError, ResponseError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from reid.identity.config import MatcherConfig, RedisConfig
from reid.identity.records import CorruptRecord, Identity, TrackRef, decode_identity, encode_identity

log = logging.getLogger(__name__)

_LOAD_CHUNK = 1000


# ----------------------------------------------------------------------------------------------------------------
# Connection
# ----------------------------------------------------------------------------------------------------------------


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
        raise ValueError("no Redis url: start an embedded one with reid.identity.redis_server.redis_url_for(config)")
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
# The backend interface the matcher uses
# ----------------------------------------------------------------------------------------------------------------


UpdateFn = Callable[[Identity | None, int], Identity]
"""(current record or None when missing/corrupt, global id) -> the record to write."""


# Run k of a pipeline on one store keeps its tracks under ids k * RUN_STRIDE + the id its detector reports: every
# run's detector numbers its tracks from 1 again, and a track of an earlier run (its key here, its references in
# identities' histories) must never be taken for this run's track of the same number.
RUN_STRIDE = 10**12


class IdentityBackend(Protocol):
    """What :class:`reid.identity.matcher.Matcher` needs from a store: Redis, or in memory for sweeps and benchmarks."""

    dim: int
    corrupt_records: int
    write_conflicts: int

    def lookup_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]: ...
    def create_identity(self, ident: Identity, track: TrackRef) -> Identity | None: ...
    def attach_track(self, global_id: int, track: TrackRef, update: UpdateFn) -> Identity | None: ...
    def move_track(self, track: TrackRef, to_global_id: int | None, update: UpdateFn,
                   detach: Callable[[Identity], Identity | None]) -> tuple[Identity, int, Identity | None] | None: ...
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
-- KEYS: 1 track key, 2 id counter, 3 last-seen index, 4 change log
-- ARGV: 1 identity key prefix, 2 track-set key prefix, 3 last_seen_ts, 4 log max len, 5.. fields
local owner = redis.call('GET', KEYS[1])
if owner then return {tonumber(owner), 0} end
local gid = redis.call('INCR', KEYS[2])
local idkey = ARGV[1] .. gid
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('DEL', idkey)
redis.call('HSET', idkey, unpack(fields))
redis.call('SET', KEYS[1], gid)
redis.call('SADD', ARGV[2] .. gid, KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], gid)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'gid', gid, 'rev', 1, 'op', 'set')
return {gid, 1}
"""

# An identity's album (timeline and thumbnails, reid.identity.album) lives under these key kinds and goes with it.
TIMELINE, THUMBS, ALBUM_INDEX = "timeline", "thumbs", "album"

_EXPIRE_LUA = """
-- KEYS: 1 last-seen index, 2 change log, 3 album index
-- ARGV: 1 cutoff (exclusive), 2 identity key prefix, 3 track-set key prefix, 4 max identities per call,
--       5 log max len, 6 timeline key prefix, 7 thumbnails key prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, gid in ipairs(ids) do
  local tset = ARGV[3] .. gid
  for _, tkey in ipairs(redis.call('SMEMBERS', tset)) do
    if redis.call('GET', tkey) == gid then redis.call('DEL', tkey) end
  end
  redis.call('DEL', tset, ARGV[2] .. gid, ARGV[6] .. gid, ARGV[7] .. gid)
  redis.call('ZREM', KEYS[1], gid)
  redis.call('ZREM', KEYS[3], gid)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'gid', gid, 'rev', -1, 'op', 'del')
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
    def from_config(cls, config: MatcherConfig, url: str | None = None) -> IdentityStore:
        """The one way to open the store a matcher config describes: its Redis (``url`` overrides ``redis.url``,
        e.g. the embedded server's), namespace, embedding size and prototypes per identity."""
        r = config.redis
        return cls(connect(r, url), dim=config.embedding_dim, max_prototypes=config.max_prototypes,
                   namespace=r.namespace, change_log_max_len=r.change_log_max_len)

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
    def _log(self) -> str:
        return self.key("log", "changes")

    # -- reads ------------------------------------------------------------------------------------------------------
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

    def recent_page(self, offset: int, limit: int) -> tuple[int, list[int]]:
        """(number of identities, the ids of one page of them, most recently seen first)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._time_index)
            pipe.zrevrange(self._time_index, offset, offset + limit - 1)
            total, ids = pipe.execute()
        return int(total), [int(g) for g in ids]

    def load_all(self) -> list[Identity]:
        """Every live identity, oldest sighting first (the gallery reload after a restart)."""
        ids = self.all_ids()
        found = self.get_many(ids)
        return [found[g] for g in ids if g in found]

    def lookup_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]:
        """Global id owning each (camera_id, track_id), or None for a track never seen."""
        if not keys:
            return []
        values = self.client.mget([self.track_key(c, t) for c, t in keys])
        return [int(v) if v is not None else None for v in values]

    # -- change log -------------------------------------------------------------------------------------------------
    def change_cursor(self) -> str:
        """Position of the newest change; read it *before* :meth:`load_all` so no change falls in between."""
        last = self.client.xrevrange(self._log, "+", "-", count=1)
        return last[0][0].decode() if last else "0-0"

    def changes_since(self, cursor: str) -> tuple[str, dict[int, int] | None]:
        """(new cursor, {gid: rev, -1 when deleted}) since ``cursor``; None when the log no longer reaches back
        that far (trimmed, or the database was flushed), so the caller must reload everything."""
        start = "-" if cursor == "0-0" else f"({cursor}"
        with self.client.pipeline(transaction=False) as pipe:  # one round trip: this runs before every decision
            pipe.xrange(self._log, "-", "+", count=1)
            pipe.xrange(self._log, start, "+", count=10_000)
            first, entries = pipe.execute()
        if not first:
            return cursor, ({} if cursor == "0-0" else None)
        if cursor != "0-0" and _stream_id(first[0][0]) > _stream_id(cursor):
            return cursor, None
        changed: dict[int, int] = {}
        while True:
            for entry_id, fields in entries:
                changed[int(fields[b"gid"])] = int(fields[b"rev"])
                cursor = entry_id.decode()
            if len(entries) < 10_000:
                return cursor, changed
            entries = self.client.xrange(self._log, f"({cursor}", "+", count=10_000)

    # -- writes -----------------------------------------------------------------------------------------------------
    def create_identity(self, ident: Identity, track: TrackRef) -> Identity | None:
        """Mint a global id for ``ident`` founded by ``track``, atomically with claiming the track key.

        When another writer already owns the track, nothing is written and that owner's record is returned
        (None if it is unreadable), so one track never gets two ids.
        """
        fields = encode_identity(replace(ident, global_id=0, rev=1))
        argv: list[Any] = [self.key("identity", ""), self.key("tracks", ""), repr(float(ident.last_seen_ts)),
                           self.change_log_max_len]
        for name, value in fields.items():
            argv += [name, value]
        keys = [self.track_key(*track.key), self.key("counter", "global_id"), self._time_index, self._log]
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
        pipe.xadd(self._log, {"gid": gid, "rev": ident.rev, "op": "set"}, maxlen=self.change_log_max_len,
                  approximate=True)

    def move_track(self, track: TrackRef, to_global_id: int | None, update: UpdateFn,
                   detach: Callable[[Identity], Identity | None]) -> tuple[Identity, int, Identity | None] | None:
        """Move ``track`` from the identity that owns it to ``to_global_id`` (None: a new identity), atomically:
        the target is written as ``update(current, gid)``, the former owner as ``detach(record)``, or deleted with
        its album when ``detach`` returns None (it had no other track). A correction, when later evidence shows
        the track was given the wrong identity. Returns (the target record, the former owner's id, its record as
        written, None when deleted); None when the track has no owner or the target no longer exists.
        """
        tkey = self.track_key(*track.key)
        new_gid = to_global_id
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(tkey)
                    owner = pipe.get(tkey)
                    if owner is None or int(owner) == new_gid:
                        pipe.unwatch()
                        return None
                    if new_gid is None:  # minted once: a retried transaction keeps it
                        new_gid = int(self.client.incr(self.key("counter", "global_id")))
                    old_gid = int(owner)
                    old_key, new_key = self.key("identity", old_gid), self.key("identity", new_gid)
                    pipe.watch(old_key, new_key)
                    raw_old = pipe.hgetall(old_key)
                    old = self._decode(old_gid, raw_old) if raw_old else None
                    raw_new = pipe.hgetall(new_key)
                    current = self._decode(new_gid, raw_new) if raw_new else None
                    if old is None or (current is None and to_global_id is not None):
                        pipe.unwatch()
                        return None
                    target = update(current, new_gid)
                    rest = detach(old)
                    pipe.multi()
                    pipe.srem(self.key("tracks", old_gid), tkey)
                    if rest is None:
                        pipe.delete(old_key, self.key("tracks", old_gid), self.key(TIMELINE, old_gid),
                                    self.key(THUMBS, old_gid))
                        pipe.zrem(self._time_index, old_gid)
                        pipe.zrem(self.key("index", ALBUM_INDEX), old_gid)
                        pipe.xadd(self._log, {"gid": old_gid, "rev": -1, "op": "del"},
                                  maxlen=self.change_log_max_len, approximate=True)
                    else:
                        pipe.delete(old_key)
                        pipe.hset(old_key, mapping=encode_identity(rest))
                        pipe.zadd(self._time_index, {old_gid: rest.last_seen_ts})
                        pipe.xadd(self._log, {"gid": old_gid, "rev": rest.rev, "op": "set"},
                                  maxlen=self.change_log_max_len, approximate=True)
                    self._queue_write(pipe, target, track)
                    pipe.execute()
                    return target, old_gid, rest
                except WatchError:
                    self.write_conflicts += 1
                    pipe.reset()
                    continue

    def next_event_seq(self) -> int:
        """The next number of the deployment's identity events (kept here, so it continues across restarts)."""
        return int(self.client.incr(self.key("events", "seq")))

    def begin_run(self, fresh: bool) -> int:
        """The number of the pipeline run writing to this store: a new one (0 for the first) when ``fresh``, the
        current one for a stage restarted within its run (see :data:`RUN_STRIDE`)."""
        key = self.key("runs", "count")
        return int(self.client.incr(key) if fresh else self.client.get(key) or 1) - 1

    def lookup_run_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]:
        """:meth:`lookup_tracks` for the current run's tracks, by the ids their detector reports (the service's
        snapshots)."""
        base = self.begin_run(fresh=False) * RUN_STRIDE
        return self.lookup_tracks([(c, base + t) for c, t in keys])

    def expire(self, cutoff_ts: float, batch: int = 1000) -> list[int]:
        """Delete identities last seen before ``cutoff_ts`` (track time), with their track keys and their album
        (timeline, thumbnails); returns their ids."""
        removed: list[int] = []
        while True:
            ids = self._expire(keys=[self._time_index, self._log, self.key("index", ALBUM_INDEX)],
                               args=[repr(float(cutoff_ts)), self.key("identity", ""), self.key("tracks", ""), batch,
                                     self.change_log_max_len, self.key(TIMELINE, ""), self.key(THUMBS, "")])
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
        self.write_conflicts = 0
        self.records: dict[int, Identity] = {}
        self.owners: dict[tuple[str, int], int] = {}
        self.next_id = 1
        self.log: list[tuple[int, int]] = []
        self.runs = 0

    def lookup_tracks(self, keys: Sequence[tuple[str, int]]) -> list[int | None]:
        return [self.owners.get(k) for k in keys]

    def begin_run(self, fresh: bool) -> int:
        self.runs += fresh
        return max(self.runs - 1, 0)

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

    def move_track(self, track: TrackRef, to_global_id: int | None, update: UpdateFn,
                   detach: Callable[[Identity], Identity | None]) -> tuple[Identity, int, Identity | None] | None:
        old_gid = self.owners.get(track.key)
        new_gid = to_global_id if to_global_id is not None else self.next_id
        if old_gid is None or old_gid == new_gid or old_gid not in self.records:
            return None
        current = self.records.get(new_gid)
        if current is None and to_global_id is not None:
            return None
        if to_global_id is None:
            self.next_id += 1
        rest = detach(self.records[old_gid].copy())
        if rest is None:
            del self.records[old_gid]
            self.log.append((old_gid, -1))
        else:
            self.records[old_gid] = rest.copy()
            self.log.append((old_gid, rest.rev))
        return self._write(update(current.copy() if current else None, new_gid), track), old_gid, rest

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
