"""Bad crops reaching the embed stage over its real sockets: each is dropped and counted, the good crops of the
same message are embedded, and every track's state still goes on to the matcher."""

from __future__ import annotations

import cv2
import numpy as np

from detectors.types import TrackState
from pipeline.embed_stage import EmbedStage
from pipeline.messages import CropsMsg, EmbeddingsMsg, TrackEntry, decode, encode

from .conftest import example_config, running


def test_embed_stage_drops_bad_crops_and_passes_the_rest(tmp_path, shared):
    cfg = example_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"reid": cfg.reid.model_copy(update={"backend": "torch", "max_wait_ms": 0})})
    query = sorted((shared / "datasets" / "cuhk03_p1" / "query").glob("*.jpg"))[0]
    good = cv2.imread(str(query))
    crops = [np.zeros((0, 5, 3), np.uint8), good, np.full((40, 20, 3), np.nan, np.float32),
             np.zeros((40, 20), np.uint8)]
    tracks = [TrackEntry(tid, TrackState.ACTIVE, 7, 0.28, (0, 0, 20, 40), 0.9, 0.5, (), row)
              for tid, row in [(1, 0), (2, 1), (3, 2), (4, 3), (9, -1)]]
    stage = EmbedStage(cfg)
    with running(stage, "match") as (push, (out,)):
        push.send_multipart(encode(CropsMsg("c0", 7, 0.28, tracks, crops)))
        assert out.poll(30_000), "the embed stage sent nothing on"
        msg = decode(out.recv_multipart())
    assert stage.counters["bad_crops"] == 3 and stage.counters["embedded"] == 1
    # the gallery keeps thumbnails by default (gallery.store_crops): one small JPEG for the one embedded crop
    assert isinstance(msg, EmbeddingsMsg) and msg.frame_index == 7 and msg.jpegs is not None and len(msg.jpegs) == 1
    embs = msg.embeddings
    assert embs.shape == (1, 1024) and np.isfinite(embs).all()
    assert np.allclose([np.linalg.norm(embs[0, :512]), np.linalg.norm(embs[0, 512:])], 1.0, atol=1e-3)
    assert [t.row for t in msg.tracks] == [-1, 0, -1, -1, -1]
    assert [t.track_id for t in msg.tracks] == [1, 2, 3, 4, 9]
