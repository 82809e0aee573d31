"""An ambiguous first match waits: a running track close to two identities gets no identity until the evidence
separates them (here: the rival is seen elsewhere in the same camera at the same time), then joins the right one;
with ``matcher.ambiguous_wait_s: 0`` it founds an identity of its own at once. The same events whatever the message
timing; and, live, a camera never heard from does not hold the decisions back. Real match stage, sockets, Redis."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from pipeline.events import ENDED, MOVED, NEW, deterministic_view
from pipeline.match_stage import MatchStage
from pipeline.messages import EmbeddingsMsg, EndMsg, encode
from reid.identity.redis_server import redis_url_for
from reid.identity.store import IdentityStore
from tests.scenes import scene

from .conftest import example_config, running


def test_the_scene_is_ambiguous_for_a():
    _, e = scene()
    sx, sy = float(e["a"] @ e["x"]), float(e["a"] @ e["y"])
    assert 0 < sx - sy < 0.03 and sy > 0.9 and float(e["x"] @ e["y"]) == pytest.approx(0.9, abs=1e-3)


def replay(tmp_path, msgs: list, wait_s: float, c0_first: bool = False) -> tuple[list[dict], dict, list, int]:
    """The scene through a real match stage and its own Redis: (events, matcher reasons, global ids of c1/1, c1/2,
    c0/1, c0/2, identities). ``c0_first`` sends all of c0 before c1: the watermark then holds every decision until
    c1 catches up, so the decisions are made long after their messages arrived."""
    cfg = example_config(tmp_path / f"run-{wait_s}-{c0_first}")
    cfg = cfg.model_copy(update={"matcher": cfg.matcher.model_copy(update={"ambiguous_wait_s": wait_s})})
    by_cam = {cam: [m for m in msgs if m.camera_id == cam] for cam in ("c0", "c1")}
    tracks = len({(m.camera_id, e.track_id) for m in msgs for e in m.tracks})
    order = ["c0", "c1"] if c0_first else ["c1", "c0"]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(cfg.endpoints.events)
    events: list[dict] = []
    try:
        with redis_url_for(cfg.matcher.redis) as url:
            stage = MatchStage(cfg, redis_url=url)
            with running(stage) as (push, _):
                time.sleep(0.3)  # the subscriber joins the publisher before the first event
                push.send_multipart(encode(EndMsg("c2")))  # no c2 in this scene: it holds no decision back
                for cam in order:
                    for m in by_cam[cam]:
                        push.send_multipart(encode(m))
                    push.send_multipart(encode(EndMsg(cam)))
                deadline = time.monotonic() + 20
                while sum(e["kind"] == ENDED for e in events) < tracks and time.monotonic() < deadline:
                    if sub.poll(100):
                        events.append(json.loads(sub.recv_multipart()[1]))
            store = IdentityStore.from_config(cfg.matcher, url)
            gids = store.lookup_tracks([("c1", 1), ("c1", 2), ("c0", 1), ("c0", 2)])
            n = len(store.all_ids())
            store.close()
    finally:
        sub.close()
        ctx.term()
    assert sum(e["kind"] == ENDED for e in events) == tracks, events
    return [deterministic_view(e) for e in events], dict(stage.tracker.matcher.stats.reasons), gids, n


@pytest.mark.parametrize("wait_s", [10.0, 0.0])
def test_an_ambiguous_running_track_waits_for_evidence(tmp_path, wait_s):
    msgs, _ = scene()
    events, reasons, (gx, gy, ga, gb), n = replay(tmp_path, msgs, wait_s)
    assert gx != gy and gb == gy
    first_a = next(e for e in events if e["camera_id"] == "c0" and e["track_id"] == 1)
    if wait_s:
        assert reasons.get("deferred", 0) >= 1, reasons
        assert ga == gx and n == 2, "A waited until B took Y, then joined X"
        assert first_a["kind"] == MOVED and first_a["reason"] == "matched" and first_a["video_ts"] >= 9.5
    else:
        assert "deferred" not in reasons and reasons.get("new:ambiguous") == 1, reasons
        assert ga not in (gx, gy) and n == 3, "A founded an identity of its own at once"
        assert first_a["kind"] == NEW and first_a["video_ts"] == 7.0


def test_deferred_decisions_do_not_depend_on_message_timing(tmp_path):
    msgs, _ = scene()
    assert replay(tmp_path, msgs, 10.0, c0_first=True)[0] == replay(tmp_path, msgs, 10.0)[0]


def test_a_track_still_ambiguous_when_its_wait_is_over_founds_an_identity(tmp_path):
    msgs, _ = scene()
    alone = [m for m in msgs if m.camera_id == "c1"] + [  # A without B: nothing settles it
        EmbeddingsMsg("c0", m.frame_index, m.ts, m.tracks[:1], m.embeddings[:1] if m.tracks[0].row == 0 else
                      np.zeros((0, 1024), np.float32)) for m in msgs if m.camera_id == "c0"]
    events, reasons, (gx, gy, ga, _), n = replay(tmp_path, alone, 2.0)
    first_a = next(e for e in events if e["camera_id"] == "c0" and e["track_id"] == 1)
    assert ga not in (gx, gy) and n == 3 and reasons.get("new:ambiguous") == 1, reasons
    assert first_a["kind"] == NEW and first_a["video_ts"] == 9.0, "deferred at 7 s, decided 2 s later, before its end"


def test_a_live_camera_never_heard_from_does_not_hold_back_the_others(tmp_path):
    """Live: a camera silent for ``matcher.max_lateness_s`` stops holding back the watermark, also one that has not
    sent a single frame since the stage started (an unreachable camera at start)."""
    cfg = example_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"matcher": cfg.matcher.model_copy(update={"max_lateness_s": 0.5})})
    msgs, e = scene()
    live = [EmbeddingsMsg(m.camera_id, m.frame_index, m.ts, m.tracks, m.embeddings, live=True)
            for m in msgs if m.camera_id == "c1"]
    with redis_url_for(cfg.matcher.redis) as url:
        stage = MatchStage(cfg, redis_url=url)
        with running(stage) as (push, _):
            for m in live:  # c0 and c2 send nothing, and no end of stream either
                push.send_multipart(encode(m))
            deadline = time.monotonic() + 10
            while stage.counters.get("identity.new", 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert stage.counters.get("identity.new", 0) == 2, dict(stage.counters)
