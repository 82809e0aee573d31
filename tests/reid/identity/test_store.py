"""The Redis store under real conditions: restarts, two processes, expiry, corrupt records, a crashing server."""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time

import pytest
import redis

from reid.identity.config import MatcherConfig, RedisConfig
from reid.identity.matcher import Matcher, TrackSummary, new_identity
from reid.identity.records import encode_identity
from reid.identity.store import RUN_STRIDE, IdentityStore
from tests.redis_server import RedisServer
from tests.reid.identity.vectors import track, unit


def matcher(url: str, **overrides) -> Matcher:
    cfg = MatcherConfig(redis=RedisConfig(url=url, **overrides.pop("redis", {})), threshold=0.6, margin=0.0,
                        **overrides)
    return Matcher(cfg, IdentityStore.from_config(cfg))


def test_keys_follow_the_namespaced_layout(redis_url):
    m = matcher(redis_url, redis={"namespace": "site1"})
    gid = m.match([track("lobby", 5, 0, 1, unit(1))])[0].global_id
    keys = {k.decode() for k in m.store.client.keys("*")}
    assert keys == {f"site1:reid:identity:{gid}", "site1:reid:track:lobby:5", "site1:reid:counter:global_id",
                    "site1:reid:index:last_seen", f"site1:reid:tracks:{gid}", "site1:reid:log:changes"}
    assert m.store.all_ids() == [gid]


def test_acl_user_confined_to_its_namespace(redis_url, monkeypatch):
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("matcher", enabled=True, passwords=["+s3cret"], keys=["site2:reid:*"], commands=["+@all"],
                      reset_keys=True)
    monkeypatch.setenv("REID_TEST_REDIS_PASSWORD", "s3cret")
    try:
        m = matcher(redis_url, redis={"namespace": "site2", "username": "matcher",
                                      "password_env": "REID_TEST_REDIS_PASSWORD"})
        assert m.match([track("c1", 1, 0, 1, unit(1))])[0].is_new  # Lua scripts included: every key is in site2
        with pytest.raises(redis.exceptions.NoPermissionError):
            m.store.client.get("elsewhere")
        with pytest.raises(redis.exceptions.AuthenticationError):
            matcher(redis_url, redis={"username": "matcher", "password": "wrong"})
    finally:
        admin.acl_deluser("matcher")
        admin.close()


def test_gallery_survives_a_matcher_restart(redis_url):
    people = [unit(i) for i in range(5)]
    first = matcher(redis_url)
    ids = [r.global_id for r in first.match([track("c1", i, 0, 10, e) for i, e in enumerate(people)])]
    first.store.close()
    del first
    second = matcher(redis_url)  # a new process would do exactly this
    assert len(second.gallery) == 5 and second.stats.reloads == 1
    again = second.match([track("c2", i, 20, 30, unit(100 + i, e, 0.3)) for i, e in enumerate(people)])
    assert [r.global_id for r in again] == ids and not any(r.is_new for r in again)
    fresh = second.match([track("c2", 99, 20, 30, unit(999))])[0]
    assert fresh.is_new and fresh.global_id == max(ids) + 1  # the counter carries on, no id reused


def test_each_pipeline_run_gets_the_next_number_and_a_restarted_stage_keeps_its_runs(redis_url):
    store = matcher(redis_url, redis={"namespace": "site3"}).store
    assert store.begin_run(fresh=False) == 0, "a restart before any run: the first run"
    assert [store.begin_run(fresh=True) for _ in range(2)] == [0, 1]
    again = matcher(redis_url, redis={"namespace": "site3"}).store  # a restarted match stage, another connection
    assert again.begin_run(fresh=False) == 1 and again.begin_run(fresh=True) == 2
    assert store.client.get("site3:reid:runs:count") == b"3"
    store.client.set(f"site3:reid:track:c0:{2 * RUN_STRIDE + 5}", 7)  # run 2's c0/5
    store.client.set("site3:reid:track:c0:5", 3)  # run 0's
    assert store.lookup_run_tracks([("c0", 5), ("c0", 6)]) == [7, None]


def test_matchers_see_each_others_identities(redis_url):
    x = unit(7)
    a, b = matcher(redis_url), matcher(redis_url)
    gid = a.match([track("c1", 1, 0, 10, x)])[0].global_id
    r = b.match([track("c2", 1, 20, 30, unit(8, x, 0.3))])[0]  # b learns of gid from the change log
    assert (r.global_id, r.is_new) == (gid, False)
    a.sync()
    assert a.gallery.identities[gid].num_tracks == 2
    a.store.client.flushall()  # the log is gone: a full reload, not a silent divergence
    a.sync()
    assert len(a.gallery) == 0 and a.stats.reloads == 2


def _worker(url: str, same: list[TrackSummary], own: list[TrackSummary], barrier, out) -> None:
    m = matcher(url)
    barrier.wait()
    same_ids = [m.match([t])[0].global_id for t in same]
    barrier.wait()
    own_ids = [m.match([t])[0].global_id for t in own]
    out.put((same_ids, own_ids, m.store.write_conflicts))


def test_two_matcher_processes_never_duplicate_nor_lose(redis_url):
    person = unit(500)
    founder = matcher(redis_url)
    pid = founder.match([track("entrance", 1, 0, 5, person)])[0].global_id
    # Phase 1: both processes get the same 12 tracks of 12 strangers. Phase 2: each adds 10 tracks of `person`.
    same = [track("c1", i, 10 + i, 11 + i, unit(i)) for i in range(12)]
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = []
    for k, name in enumerate(("pA", "pB")):
        own = [track(name, i, 100 + 10 * i, 105 + 10 * i, unit(1000 * (k + 1) + i, person, 0.2), crops=3)
               for i in range(10)]
        procs.append(ctx.Process(target=_worker, args=(redis_url, same, own, barrier, out)))
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    (same_a, own_a, conflicts_a), (same_b, own_b, conflicts_b) = results
    print(f"write conflicts retried: {conflicts_a} + {conflicts_b}")
    assert same_a == same_b  # one id per track whoever got there first
    assert len(set(same_a)) == 12 and pid not in same_a
    store = founder.store
    assert int(store.client.get(store.key("counter", "global_id"))) == 13  # minted once per person, no more
    assert set(own_a) == set(own_b) == {pid}
    record = store.get(pid)
    assert record.num_tracks == 1 + 20 and record.num_crops == 4 + 20 * 3  # no update lost
    assert {t.camera_id for t in record.tracks} == {"entrance", "pA", "pB"}


def test_identities_unseen_for_expiry_s_are_deleted(redis_url):
    m = matcher(redis_url, expiry_s=100, expire_every_s=0)
    old = m.match([track("c1", 1, 0, 10, unit(1))])[0].global_id
    recent = m.match([track("c1", 2, 50, 60, unit(2))])[0].global_id
    m.match([track("c2", 1, 150, 155, unit(3))])  # now = 155: cutoff 55 drops `old` (last seen 10)
    assert m.store.get(old) is None and old not in m.gallery and m.stats.expired == 1
    assert m.store.get(recent) is not None
    assert m.store.lookup_tracks([("c1", 1), ("c1", 2)]) == [None, recent]
    assert old not in m.store.all_ids() and m.store.client.exists(m.store.key("tracks", old)) == 0
    back = m.match([track("c3", 1, 160, 170, unit(1))])[0]  # the same person comes back: a new identity
    assert back.is_new and back.global_id != old


def test_corrupt_records_are_reported_and_skipped(redis_url, caplog):
    m = matcher(redis_url)
    people = [unit(i) for i in range(4)]
    ids = [r.global_id for r in m.match([track("c1", i, 0, 10, e) for i, e in enumerate(people)])]
    client, store = m.store.client, m.store
    client.hset(store.key("identity", ids[0]), "protos", b"\x00" * 17)  # wrong size
    client.delete(store.key("identity", ids[1]))
    client.set(store.key("identity", ids[1]), b"not a hash")  # wrong type
    other = new_identity(track("c1", 2, 0, 10, people[2]), ids[2])
    small = {k: v for k, v in encode_identity(other).items()}
    small.update(dim="512", protos=b"\x00" * 512 * 4)  # an embedding of another size
    client.hset(store.key("identity", ids[2]), mapping=small)
    with caplog.at_level(logging.WARNING, logger="reid.identity.store"):
        fresh = matcher(redis_url)
    assert sorted(fresh.gallery.identities) == [ids[3]]
    assert fresh.store.corrupt_records == 3
    assert sum("corrupt identity record" in r.message or "not a hash" in r.message for r in caplog.records) >= 2
    assert "prototypes are 17 bytes" in caplog.text and "embedding dim 512" in caplog.text
    # Matching goes on: a known track of a corrupt identity rebuilds it, the intact one still matches.
    r0, r3 = fresh.match([track("c1", 0, 0, 12, people[0], crops=5), track("c2", 9, 30, 40, unit(9, people[3], 0.3))])
    assert (r0.global_id, r0.reason) == (ids[0], "known") and fresh.store.get(ids[0]) is not None
    assert (r3.global_id, r3.is_new) == (ids[3], False)


def test_redis_crash_and_restart_mid_run_loses_no_update(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        m = matcher(server.url, redis={"retry_attempts": 14, "retry_base_s": 0.02, "retry_cap_s": 0.5},
                    expire_every_s=0)
        person = unit(1)
        results = [m.match([track("c1", i, 10 * i, 10 * i + 5, unit(100 + i, person, 0.2))])[0] for i in range(5)]
        server.kill()  # SIGKILL, no shutdown
        restarter = threading.Timer(0.7, server.start)
        restarter.start()
        t0 = time.monotonic()
        results += [m.match([track("c1", i, 10 * i, 10 * i + 5, unit(100 + i, person, 0.2))])[0] for i in range(5, 10)]
        waited = time.monotonic() - t0
        restarter.join()
        assert waited >= 0.5  # the first call after the crash waited for the server, with backoff
        gid = results[0].global_id
        assert all(r.global_id == gid for r in results)
        fresh = matcher(server.url)  # what a restarted matcher reads back from the append-only file
        assert fresh.store.get(gid).num_tracks == 10 and len(fresh.gallery) == 1
        assert fresh.store.lookup_tracks([("c1", i) for i in range(10)]) == [gid] * 10
    finally:
        server.stop()


def test_a_corrected_track_moves_atomically_and_another_matcher_follows(redis_url):
    """A track moved to another identity (a correction): the track key, both records and the change log follow in
    one transaction; an identity left without tracks is deleted; a second matcher sees the result."""
    m, other = matcher(redis_url, redis={"namespace": "moves"}), matcher(redis_url, redis={"namespace": "moves"})
    a, b, c = unit(1), unit(2), unit(3)
    ga, gb = (r.global_id for r in m.match([track("c0", 1, 0, 5, a), track("c1", 1, 0, 5, b)]))
    gc = m.match([track("c1", 2, 6, 9, unit(30, b, 0.2))])[0].global_id
    assert gc == gb
    moved_to, left = m.move(track("c1", 2, 6, 9, unit(30, b, 0.2)), ga)
    assert (moved_to.global_id, left) == (ga, gb)
    assert m.store.lookup_tracks([("c1", 2)]) == [ga]
    assert [r.key for r in m.store.get(gb).tracks] == [("c1", 1)]  # kept: it still has a track
    assert {r.key for r in m.store.get(ga).tracks} == {("c0", 1), ("c1", 2)}
    moved_to, left = m.move(track("c0", 1, 0, 5, a), None)  # to a new identity of its own
    assert left == ga and moved_to.global_id not in (ga, gb, gc)
    assert m.move(track("c9", 9, 0, 1, c), ga) is None  # no owner: nothing to correct
    other.sync()
    assert set(other.gallery.identities) == {ga, gb, moved_to.global_id}
    m.move(track("c1", 2, 6, 9, unit(30, b, 0.2)), gb)  # ga loses its last track: deleted
    assert m.store.get(ga) is None and m.store.lookup_tracks([("c1", 2)]) == [gb]
    other.sync()
    assert set(other.gallery.identities) == {gb, moved_to.global_id}
