"""Identity albums on a real Redis: timeline per track, best thumbnails, retention, and nothing left after expiry."""

from __future__ import annotations

from reid.identity.album import Album, Appearance
from reid.identity.config import MatcherConfig, RedisConfig
from reid.identity.matcher import Matcher
from reid.identity.store import ALBUM_INDEX, IdentityStore
from tests.reid.identity.vectors import D, track, unit


def matcher(url: str, **overrides) -> Matcher:
    cfg = MatcherConfig(redis=RedisConfig(url=url), threshold=0.6, margin=0.0, **overrides)
    return Matcher(cfg, IdentityStore.from_config(cfg))


def albums(album: Album) -> set[int]:
    """The identities that have an album (the album index, as the service lists them)."""
    return {int(g) for g in album.client.zrange(album.store.key("index", ALBUM_INDEX), 0, -1)}


def test_timeline_keeps_one_entry_per_track_and_the_best_thumbnails(redis_url):
    m = matcher(redis_url)
    album = Album(m.store, max_appearances=3, max_thumbnails=2)
    gid = m.match([track("c0", 1, 0, 5, unit(1))])[0].global_id
    assert album.record(gid, Appearance("c0", 1, 0.0, 2.0), b"q3", 0.3)
    assert album.record(gid, Appearance("c0", 1, 0.0, 5.0, (1.5, 2.5)), b"q5", 0.5)  # same track: updated
    assert [a.last_seen_ts for a in album.timeline(gid)] == [5.0]
    assert album.timeline(gid)[0].ground_xy == (1.5, 2.5)
    assert [album.thumbnail(gid, n) for n in album.thumbnail_numbers(gid)] == [b"q5"]  # its own slot, improved
    album.record(gid, Appearance("c1", 7, 6.0, 9.0), b"q4", 0.4)
    album.record(gid, Appearance("c2", 3, 10.0, 12.0), b"q1", 0.1)  # worse than both kept: not kept
    album.record(gid, Appearance("c2", 4, 13.0, 14.0), b"q9", 0.9)  # replaces the worst (q4)
    assert [album.thumbnail(gid, n) for n in album.thumbnail_numbers(gid)] == [b"q9", b"q5"]
    # at most 3 appearances: the one last seen earliest (c0/1 at 5 s) went first
    assert [(a.camera_id, a.track_id) for a in album.timeline(gid)] == [("c1", 7), ("c2", 3), ("c2", 4)]


def test_no_album_for_an_identity_that_does_not_exist(redis_url):
    store = IdentityStore.from_config(MatcherConfig(embedding_dim=D, redis=RedisConfig(url=redis_url)))
    album = Album(store)
    assert not album.record(12345, Appearance("c0", 1, 0.0, 1.0), b"jpeg", 1.0)
    assert store.client.keys("*") == []


def test_retention_by_age_and_by_count_keeps_the_identities(redis_url):
    m = matcher(redis_url)
    album = Album(m.store)
    gids = [m.match([track("c0", i, 10 * i, 10 * i + 1, unit(i))])[0].global_id for i in range(4)]
    for i, gid in enumerate(gids):
        album.record(gid, Appearance("c0", i, 10.0 * i, 10.0 * i + 1), b"jpeg", 0.5)
    assert album.prune(cutoff_ts=5.0, max_identities=10) == [gids[0]]  # last seen at 1 s
    assert album.prune(cutoff_ts=5.0, max_identities=2) == [gids[1]]  # the least recently seen beyond two
    assert album.timeline(gids[0]) == [] and album.thumbnail_numbers(gids[1]) == []
    assert len(albums(album)) == 2 and all(m.store.get(g) is not None for g in gids)


def test_an_expired_identity_leaves_nothing_behind(redis_url):
    m = matcher(redis_url, expiry_s=100, expire_every_s=0)
    album = Album(m.store)
    old = m.match([track("c0", 1, 0, 10, unit(1))])[0].global_id
    album.record(old, Appearance("c0", 1, 0.0, 10.0), b"jpeg", 0.5)
    before = set(m.store.client.keys("*"))
    new = m.match([track("c1", 2, 150, 155, unit(2))])[0].global_id  # now 155: `old` expires
    album.record(new, Appearance("c1", 2, 150.0, 155.0), b"jpeg", 0.5)
    assert m.store.get(old) is None
    left = {k.decode() for k in m.store.client.keys("*")}
    assert not any(k.endswith(f":{old}") for k in left), left
    assert {k.decode() for k in before} - left >= {f"reid:timeline:{old}", f"reid:thumbs:{old}"}
    assert albums(album) == {new}


def test_a_moved_track_leaves_the_album_of_its_former_identity(redis_url):
    m = matcher(redis_url)
    album = Album(m.store, max_thumbnails=2)
    gid = m.match([track("c0", 1, 0, 5, unit(1))])[0].global_id
    album.record(gid, Appearance("c0", 1, 0.0, 5.0), b"mine", 0.5)
    album.record(gid, Appearance("c1", 2, 1.0, 4.0), b"wrong", 0.9)
    album.forget(gid, "c1", 2)
    assert [(a.camera_id, a.track_id) for a in album.timeline(gid)] == [("c0", 1)]
    assert [album.thumbnail(gid, n) for n in album.thumbnail_numbers(gid)] == [b"mine"]
