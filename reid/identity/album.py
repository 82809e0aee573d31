"""Each identity's album in Redis: its timeline (one appearance per track) and a few thumbnails.

Why in Redis and not in files: the identity itself lives there, so one Lua script can write an appearance only
while its identity exists, and the store's expiry script deletes the identity, its timeline and its thumbnails
together (:mod:`reid.identity.store`): an expired identity leaves nothing behind, whichever process expired it
and whichever host serves the pictures. Thumbnails are small (longest side 128 px, a few KB) and bounded
(``max_thumbnails`` per identity, ``max_identities`` identities), so they cost Redis little memory.

Keys (beside the store's, same namespace):

| key | type | holds |
|---|---|---|
| ``reid:timeline:<gid>`` | hash | ``<camera>:<track>`` -> JSON appearance |
| ``reid:thumbs:<gid>`` | hash | ``<n>`` -> JPEG, ``q:<n>`` -> its crop quality, ``t:<n>`` -> the track it shows |
| ``reid:index:album`` | zset | gid -> last seen (track time): retention by age and by count |
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from reid.identity.config import GalleryConfig
from reid.identity.store import ALBUM_INDEX, THUMBS, TIMELINE, IdentityStore

_RECORD_LUA = """
-- KEYS: 1 identity, 2 timeline, 3 thumbnails, 4 album index
-- ARGV: 1 gid, 2 track field, 3 appearance JSON, 4 last seen, 5 max appearances, 6 max thumbnails,
--       7 crop quality, 8 JPEG ('' for none)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[5]) then
  local all = redis.call('HGETALL', KEYS[2])
  local oldest, oldest_ts = nil, nil
  for i = 1, #all, 2 do
    local ts = cjson.decode(all[i + 1])['last_seen_ts']
    if oldest_ts == nil or ts < oldest_ts then oldest, oldest_ts = all[i], ts end
  end
  redis.call('HDEL', KEYS[2], oldest)
end
redis.call('ZADD', KEYS[4], 'GT', ARGV[4], ARGV[1])
if #ARGV[8] == 0 then return 1 end
local q, k = tonumber(ARGV[7]), tonumber(ARGV[6])
local slot, worst, worst_q = nil, nil, nil
for s = 0, k - 1 do
  if redis.call('HGET', KEYS[3], 't:' .. s) == ARGV[2] then slot = s break end
end
if slot ~= nil then
  if q <= tonumber(redis.call('HGET', KEYS[3], 'q:' .. slot)) then return 1 end
else
  for s = 0, k - 1 do
    local sq = redis.call('HGET', KEYS[3], 'q:' .. s)
    if not sq then slot = s break end
    if worst_q == nil or tonumber(sq) < worst_q then worst, worst_q = s, tonumber(sq) end
  end
  if slot == nil then
    if q <= worst_q then return 1 end
    slot = worst
  end
end
redis.call('HSET', KEYS[3], tostring(slot), ARGV[8], 'q:' .. slot, ARGV[7], 't:' .. slot, ARGV[2])
return 1
"""

_FORGET_LUA = """
-- KEYS: 1 timeline, 2 thumbnails; ARGV: 1 track field, 2 max thumbnails
redis.call('HDEL', KEYS[1], ARGV[1])
for s = 0, tonumber(ARGV[2]) - 1 do
  if redis.call('HGET', KEYS[2], 't:' .. s) == ARGV[1] then
    redis.call('HDEL', KEYS[2], tostring(s), 'q:' .. s, 't:' .. s)
  end
end
return 1
"""

_PRUNE_LUA = """
-- KEYS: 1 album index; ARGV: 1 cutoff (exclusive), 2 max identities, 3 timeline prefix, 4 thumbnails prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - #ids - tonumber(ARGV[2])
if over > 0 then
  for _, gid in ipairs(redis.call('ZRANGE', KEYS[1], #ids, #ids + over - 1)) do ids[#ids + 1] = gid end
end
for _, gid in ipairs(ids) do
  redis.call('DEL', ARGV[3] .. gid, ARGV[4] .. gid)
  redis.call('ZREM', KEYS[1], gid)
end
return ids
"""


@dataclass(frozen=True)
class Appearance:
    """One track of an identity: where and when it was seen, and where it stood last (calibrated cameras)."""

    camera_id: str
    track_id: int
    first_seen_ts: float
    last_seen_ts: float
    ground_xy: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {"camera_id": self.camera_id, "track_id": self.track_id, "first_seen_ts": round(self.first_seen_ts, 4),
                "last_seen_ts": round(self.last_seen_ts, 4),
                "ground_xy": list(self.ground_xy) if self.ground_xy is not None else None}

    @classmethod
    def from_json(cls, d: dict) -> Appearance:
        g = d.get("ground_xy")
        return cls(str(d["camera_id"]), int(d["track_id"]), float(d["first_seen_ts"]), float(d["last_seen_ts"]),
                   (float(g[0]), float(g[1])) if g else None)


class Album:
    """Reads and writes the albums of the identities in ``store`` (same Redis, same namespace)."""

    def __init__(self, store: IdentityStore, max_appearances: int = 64, max_thumbnails: int = 4) -> None:
        self.store = store
        self.client = store.client
        self.max_appearances = max_appearances
        self.max_thumbnails = max_thumbnails
        self._record = self.client.register_script(_RECORD_LUA)
        self._prune = self.client.register_script(_PRUNE_LUA)
        self._forget = self.client.register_script(_FORGET_LUA)

    @classmethod
    def from_config(cls, store: IdentityStore, config: GalleryConfig) -> Album:
        return cls(store, max_appearances=config.max_appearances, max_thumbnails=config.max_thumbnails)

    def record(self, global_id: int, appearance: Appearance, jpeg: bytes = b"", quality: float = 0.0) -> bool:
        """Add or update ``appearance`` (keyed by its track), and offer ``jpeg`` as a thumbnail: it takes the slot
        of its own track if better, else a free slot, else the worst one if better. Nothing is written when the
        identity no longer exists (expired meanwhile): False."""
        if not math.isfinite(quality):
            quality = 0.0
        field = f"{appearance.camera_id}:{appearance.track_id}"
        k = self.store.key
        return bool(self._record(
            keys=[k("identity", global_id), k(TIMELINE, global_id), k(THUMBS, global_id), k("index", ALBUM_INDEX)],
            args=[global_id, field, json.dumps(appearance.to_json()), repr(float(appearance.last_seen_ts)),
                  self.max_appearances, self.max_thumbnails, repr(float(quality)), jpeg]))

    def forget(self, global_id: int, camera_id: str, track_id: int) -> None:
        """Take a track's appearance and thumbnail out of an identity's album (the track was moved elsewhere)."""
        k = self.store.key
        self._forget(keys=[k(TIMELINE, global_id), k(THUMBS, global_id)],
                     args=[f"{camera_id}:{track_id}", self.max_thumbnails])

    def timeline(self, global_id: int) -> list[Appearance]:
        """The identity's appearances, earliest first."""
        raw = self.client.hgetall(self.store.key(TIMELINE, global_id))
        apps = [Appearance.from_json(json.loads(v)) for v in raw.values()]
        return sorted(apps, key=lambda a: (a.first_seen_ts, a.camera_id, a.track_id))

    def thumbnail_numbers(self, global_id: int) -> list[int]:
        """Numbers of the identity's thumbnails, best quality first (reads the field names and qualities only,
        not the JPEGs: it runs for every identity of a page and every search hit)."""
        key = self.store.key(THUMBS, global_id)
        fields = [f for f in self.client.hkeys(key) if f.startswith(b"q:")]
        if not fields:
            return []
        quality = dict(zip(fields, self.client.hmget(key, fields), strict=True))
        slots = [int(f[2:]) for f in fields if quality[f] is not None]
        return sorted(slots, key=lambda s: -float(quality[f"q:{s}".encode()]))

    def thumbnail(self, global_id: int, number: int) -> bytes | None:
        return self.client.hget(self.store.key(THUMBS, global_id), str(number))

    def prune(self, cutoff_ts: float, max_identities: int) -> list[int]:
        """Delete the albums of identities last seen before ``cutoff_ts``, then of the least recently seen beyond
        ``max_identities``; the identities themselves stay (the matcher's expiry removes those). Returns their ids."""
        k = self.store.key
        ids = self._prune(keys=[k("index", ALBUM_INDEX)],
                          args=[repr(float(cutoff_ts)), max_identities, k(TIMELINE, ""), k(THUMBS, "")])
        return [int(g) for g in ids]
