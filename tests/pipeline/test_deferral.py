"""An ambiguous first match waits: a running track close to two identities gets no identity until the evidence
separates them (here: the rival is seen elsewhere in the same camera at the same time), then joins the right one;
with ``match.ambiguous_wait_s: 0`` it founds an identity of its own at once. Real match stage, sockets and Redis."""

from __future__ import annotations

import time

import numpy as np
import pytest

from detectors.types import TrackState
from pipeline.match_stage import MatchStage
from pipeline.messages import EmbeddingsMsg, EndMsg, TrackEntry, encode
from reid.identity.redis_server import redis_url_for
from reid.identity.store import IdentityStore

from .conftest import example_config, running


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def frame(cam: str, ts: float, rows: list[tuple[int, TrackState, np.ndarray | None]]) -> EmbeddingsMsg:
    """One frame of ``cam``: (track, state, embedding or None) per track seen."""
    embs = [e for _, _, e in rows if e is not None]
    entries, k = [], 0
    for tid, state, e in rows:
        x = 60.0 * tid
        entries.append(TrackEntry(tid, state, int(ts * 25), ts, (x, 20.0, x + 30, 120.0), 0.9, 0.5, (),
                                  k if e is not None else -1))
        k += e is not None
    return EmbeddingsMsg(cam, int(ts * 25), ts, tuple(entries),
                         np.stack(embs) if embs else np.zeros((0, 1024), np.float32))


def scene() -> tuple[list[EmbeddingsMsg], dict[str, np.ndarray]]:
    """c1, 0-3.5 s: X and Y, two similar people (cosine 0.9), side by side. c0, 5-12.5 s: A, nearly as close to
    Y as to X (within the 0.03 margin), and from 7.5 s B, who is plainly Y, beside A."""
    rng = np.random.default_rng(7)
    p, q, r = (rng.standard_normal(1024) for _ in range(3))
    x = unit(p)
    y = unit(0.9 * x + np.sqrt(1 - 0.81) * unit(q - (q @ x) * x))
    a = unit(1.1 * x + y + 0.05 * unit(r))
    msgs = []
    for ts in np.arange(0.0, 3.01, 0.5):
        state = TrackState.STARTED if ts == 0 else TrackState.ACTIVE
        crop = ts in (0.0, 1.0)
        msgs.append(frame("c1", ts, [(1, state, x if crop else None), (2, state, y if crop else None)]))
    msgs.append(frame("c1", 3.5, [(1, TrackState.ENDED, None), (2, TrackState.ENDED, None)]))
    for ts in np.arange(5.0, 12.01, 0.5):
        rows = [(1, TrackState.STARTED if ts == 5 else TrackState.ACTIVE, a if ts in (5.0, 6.0) else None)]
        if ts >= 7.5:
            rows.append((2, TrackState.STARTED if ts == 7.5 else TrackState.ACTIVE, y if ts in (7.5, 8.5) else None))
        msgs.append(frame("c0", ts, rows))
    msgs.append(frame("c0", 12.5, [(1, TrackState.ENDED, None), (2, TrackState.ENDED, None)]))
    return msgs, {"x": x, "y": y, "a": a}


def test_the_scene_is_ambiguous_for_a():
    _, e = scene()
    sx, sy = float(e["a"] @ e["x"]), float(e["a"] @ e["y"])
    assert 0 < sx - sy < 0.03 and sy > 0.9 and float(e["x"] @ e["y"]) == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize("wait_s", [10.0, 0.0])
def test_an_ambiguous_running_track_waits_for_evidence(tmp_path, wait_s):
    cfg = example_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"match": cfg.match.model_copy(update={"ambiguous_wait_s": wait_s})})
    msgs, _ = scene()
    with redis_url_for(cfg.matcher.redis) as url:
        stage = MatchStage(cfg, redis_url=url)
        with running(stage) as (push, _):
            push.send_multipart(encode(EndMsg("c2")))  # no c2 in this scene: it holds no decision back
            for m in msgs:
                push.send_multipart(encode(m))
                if m.camera_id == "c1" and m.tracks[0].state == TrackState.ENDED:
                    push.send_multipart(encode(EndMsg("c1")))
            push.send_multipart(encode(EndMsg("c0")))
            deadline = time.monotonic() + 20
            while stage.counters.get("track.ended", 0) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert stage.counters.get("track.ended", 0) == 4
        reasons = dict(stage.matcher.stats.reasons)
        store = IdentityStore.from_config(cfg.matcher.redis, url)
        gx, gy, ga, gb = store.lookup_tracks([("c1", 1), ("c1", 2), ("c0", 1), ("c0", 2)])
        n = len(store.all_ids())
        store.close()
    assert gx != gy and gb == gy
    if wait_s:
        assert reasons.get("deferred", 0) >= 1, reasons
        assert ga == gx and n == 2, "A waited until B took Y, then joined X"
    else:
        assert "deferred" not in reasons and reasons.get("new:ambiguous") == 1, reasons
        assert ga not in (gx, gy) and n == 3, "A founded an identity of its own at once"
