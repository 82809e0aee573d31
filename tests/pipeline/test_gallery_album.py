"""The match stage fills each identity's album (timeline and thumbnails) in the run's own Redis, and keeps no image
at all with ``gallery.store_crops: false``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from detectors.types import TrackState
from pipeline.match_stage import MatchStage
from pipeline.messages import EmbeddingsMsg, EndMsg, TrackEntry, encode
from reid.identity.album import Album
from reid.identity.redis_server import redis_url_for
from reid.identity.store import IdentityStore

from .conftest import example_config, running


def entry(tid: int, state: TrackState, ts: float, quality: float, row: int) -> TrackEntry:
    return TrackEntry(tid, state, int(ts * 25), ts, (10.0, 20.0, 40.0, 120.0), 0.9, quality, (), row)


def person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("store_crops", [True, False])
def test_match_stage_writes_timelines_and_thumbnails(tmp_path, store_crops):
    cfg = example_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"gallery": cfg.gallery.model_copy(update={"store_crops": store_crops})})
    a = person(1)
    msgs = []  # one person: c0 from 0 to 3 s, then c1 from 5 to 8 s; a crop at every second
    for cam, tid, t0 in (("c0", 1, 0.0), ("c1", 2, 5.0)):
        for k in range(4):
            state = TrackState.STARTED if k == 0 else TrackState.ACTIVE
            jpeg = f"{cam}-{k}".encode()  # the bytes are stored as given: any bytes stand in for a JPEG
            msgs.append(EmbeddingsMsg(cam, int((t0 + k) * 25), t0 + k, (entry(tid, state, t0 + k, 0.2 * (k + 1), 0),),
                                      (a + 0.01 * person(10 * tid + k))[None].astype(np.float32), (jpeg,)))
        msgs.append(EmbeddingsMsg(cam, int((t0 + 3.5) * 25), t0 + 3.5, (entry(tid, TrackState.ENDED, t0 + 3.5, 0, -1),),
                                  np.zeros((0, 1024), np.float32), ()))
    with redis_url_for(cfg.matcher.redis) as url:
        stage = MatchStage(cfg, redis_url=url)
        with running(stage) as (push, _):
            for m in msgs:
                push.send_multipart(encode(m))
            for cam in cfg.cameras:
                push.send_multipart(encode(EndMsg(cam.id)))
            deadline = time.monotonic() + 20
            while stage.counters.get("track.ended", 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        store = IdentityStore.from_config(cfg.matcher, url)
        album = Album(store)
        ids = store.all_ids()
        assert len(ids) == 1, "one person, one identity"
        timeline = album.timeline(ids[0])
        thumbs = [album.thumbnail(ids[0], n) for n in album.thumbnail_numbers(ids[0])]
        images = [k for k in store.client.keys("*") if b"thumbs" in k]
        store.close()
    # last seen: each track's last sighting (3 s, 8 s), not its end row half a second later
    assert [(a.camera_id, a.track_id, a.first_seen_ts, a.last_seen_ts) for a in timeline] == [
        ("c0", 1, 0.0, 3.0), ("c1", 2, 5.0, 8.0)]
    if store_crops:  # each track's best crop (the last, quality 0.8), best first; ties: the earliest track
        assert thumbs == [b"c0-3", b"c1-3"]
    else:
        assert thumbs == [] and images == []
