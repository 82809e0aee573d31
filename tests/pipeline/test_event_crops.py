"""``events_include_crops`` over the real embed and match stages, their real sockets and the run's own Redis: the
identity events carry a decodable JPEG of the track's best crop when it is on, and no image data when it is off."""

from __future__ import annotations

import base64
import json
import time

import cv2
import numpy as np
import pytest
import zmq

from detectors.types import TrackState
from pipeline.embed_stage import EmbedStage, crop_jpeg
from pipeline.events import ENDED, MOVED, NEW
from pipeline.match_stage import MatchStage
from pipeline.messages import CropsMsg, EmbeddingsMsg, EndMsg, TrackEntry, decode, encode
from reid.identity.redis_server import redis_url_for

from .conftest import example_config, running


def track(tid: int, state: TrackState, frame: int, ts: float, quality: float = 0.5, row: int = -1) -> TrackEntry:
    return TrackEntry(tid, state, frame, ts, (10.0, 20.0, 40.0, 120.0), 0.9, quality, (), row)


@pytest.mark.parametrize("include", [False, True])
def test_identity_events_carry_the_best_crop_only_when_asked(tmp_path, shared, include):
    cfg = example_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"events_include_crops": include,  # gallery thumbnails off: events decide alone
                                 "gallery": cfg.gallery.model_copy(update={"store_crops": False}),
                                 "reid": cfg.reid.model_copy(update={"backend": "torch", "max_wait_ms": 0})})
    query = sorted((shared / "datasets" / "cuhk03_p1" / "query").glob("1001_*.jpg"))
    low, high = cv2.imread(str(query[0])), cv2.imread(str(query[1]))  # one person, two crops
    # c0: a track with a poor then a good crop, matured by its second crop; c1, later: the same person again.
    inputs = [
        CropsMsg("c0", 0, 0.0, (track(1, TrackState.STARTED, 0, 0.0, 0.3, row=0),), (low,)),
        CropsMsg("c0", 5, 0.2, (track(1, TrackState.ACTIVE, 5, 0.2, 0.9, row=0),), (high,)),
        # seen for 2.5 s: longer than min_age_s (a track's age is until its last sighting, not its end)
        CropsMsg("c0", 62, 2.5, (track(1, TrackState.ACTIVE, 62, 2.5), track(1, TrackState.ENDED, 62, 2.5))),
        CropsMsg("c1", 125, 5.0, (track(2, TrackState.STARTED, 125, 5.0, 0.5, row=0),), (low,)),
        CropsMsg("c1", 187, 7.5, (track(2, TrackState.ACTIVE, 187, 7.5), track(2, TrackState.ENDED, 187, 7.5))),
    ]
    embed = EmbedStage(cfg)
    with running(embed, "match") as (push, (out,)):
        for m in inputs:
            push.send_multipart(encode(m))
        embedded = []
        while len(embedded) < len(inputs) and out.poll(30_000):
            embedded.append(out.recv_multipart())
    assert len(embedded) == len(inputs), "the embed stage did not pass every message on"
    with_crops = [decode(f) for f in embedded if len(decode(f).embeddings)]
    assert all(isinstance(m, EmbeddingsMsg) and (m.jpegs is not None) == include for m in with_crops)

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(cfg.endpoints.events)
    events = []
    try:
        # The run's own embedded Redis, as the supervisor starts it, stopped with the test (no process outlives it).
        with redis_url_for(cfg.matcher.redis) as url, running(MatchStage(cfg, redis_url=url)) as (push, _):
            time.sleep(0.5)  # the subscriber joins the publisher before the first event
            for frames in embedded:
                push.send_multipart(frames)
            for cam in cfg.cameras:  # every stream ends: the watermark lets every decision through
                push.send_multipart(encode(EndMsg(cam.id)))
            deadline = time.monotonic() + 30
            while sum(e["kind"] == ENDED for e in events) < 2 and time.monotonic() < deadline:
                if sub.poll(200):
                    events.append(json.loads(sub.recv_multipart()[1]))
    finally:
        sub.close()
        ctx.term()

    assert [(e["kind"], e["camera_id"]) for e in events] == [(NEW, "c0"), (ENDED, "c0"), (MOVED, "c1"), (ENDED, "c1")]
    if not include:
        assert not any("crop_jpeg" in e for e in events)
        return
    assert not any("crop_jpeg" in e for e in events if e["kind"] == ENDED)
    for e, best in zip([events[0], events[2]], [high, low], strict=True):
        jpeg = base64.b64decode(e["crop_jpeg"])
        assert jpeg == crop_jpeg(best)  # the higher-quality crop of the two the decision used
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and max(image.shape[:2]) == 128 and image.shape[2] == 3
