"""Wire format: each message kind round trips and rejects wrong fields by name and shape; hostile input from a
foreign client is dropped and counted, never fatal."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.types import TrackState
from pipeline.messages import (
    FRAME,
    MAX_BUFFER_BYTES,
    VERSION,
    CropsMsg,
    EmbeddingsMsg,
    EndMsg,
    FrameMsg,
    MessageError,
    TrackEntry,
    decode,
    encode,
)

from .conftest import EchoStage, example_config, running

RNG = np.random.default_rng(0)


def wire(msg):
    """The message through encode and decode, as bytes (what a socket hands over)."""
    return decode([bytes(f) for f in encode(msg)])


def entry(**kw) -> TrackEntry:
    fields = {"track_id": 7, "state": TrackState.ACTIVE, "frame_index": 12, "ts": 0.48, "xyxy": (1.5, 2.0, 30.0, 90.5),
              "conf": 0.8, "quality": 0.6, "verdicts": ("blur",), "row": 0} | kw
    return TrackEntry(**fields)


def stream_fields(msg) -> tuple:
    return msg.camera_id, msg.frame_index, msg.ts, msg.wall_ts, msg.live


# -- round trips ------------------------------------------------------------------------------------------------------


def test_frame_round_trip():
    frame = RNG.integers(0, 255, (288, 360, 3), dtype=np.uint8)
    msg = FrameMsg("c0", 41, 1.64, frame, wall_ts=1e9, live=True)
    got = wire(msg)
    assert isinstance(got, FrameMsg) and stream_fields(got) == ("c0", 41, 1.64, 1e9, True)
    np.testing.assert_array_equal(got.frame, frame)


def test_crops_round_trip_keeps_entries_and_crops():
    crops = (RNG.integers(0, 255, (120, 50, 3), dtype=np.uint8), RNG.integers(0, 255, (60, 30, 3), dtype=np.uint8))
    tracks = (entry(row=1), entry(track_id=8, state=TrackState.LOST, verdicts=(), row=-1), entry(track_id=9, row=0))
    got = wire(CropsMsg("c1", 12, 0.48, tracks, crops, wall_ts=5.0))
    assert isinstance(got, CropsMsg) and stream_fields(got) == ("c1", 12, 0.48, 5.0, False)
    assert got.tracks == tracks and got.tracks[1].state is TrackState.LOST
    assert len(got.crops) == 2
    for a, b in zip(got.crops, crops, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("with_jpegs", [False, True])
def test_embeddings_round_trip_with_and_without_jpegs(with_jpegs):
    embs = RNG.random((2, 1024), dtype=np.float32)
    jpegs = (b"\xff\xd8first", b"") if with_jpegs else None
    tracks = (entry(row=1), entry(track_id=3, state=TrackState.ENDED, row=-1))
    got = wire(EmbeddingsMsg("c2", 3, 9.5, tracks, embs, jpegs, wall_ts=2.0))
    assert isinstance(got, EmbeddingsMsg) and stream_fields(got) == ("c2", 3, 9.5, 2.0, False)
    assert got.tracks == tracks and got.jpegs == jpegs
    np.testing.assert_array_equal(got.embeddings, embs)


def test_empty_embeddings_and_end_round_trip():
    got = wire(EmbeddingsMsg("c0", 0, 0.0, (entry(row=-1),), np.zeros((0, 1024), np.float32)))
    assert got.embeddings.shape == (0, 1024) and got.jpegs is None
    assert wire(EndMsg("c0")) == EndMsg("c0")


def test_fields_are_normalised_to_plain_types():
    """Detector output (numpy scalars, an xyxy array, a state string) becomes plain msgpack-able values."""
    t = entry(track_id=np.int64(4), state="started", ts=np.float32(0.5), xyxy=np.array([1, 2, 3, 4], np.float32),
              conf=np.float32(0.25), verdicts=["small"])
    assert type(t.track_id) is int and t.state is TrackState.STARTED and type(t.ts) is float
    assert t.xyxy == (1.0, 2.0, 3.0, 4.0) and all(type(v) is float for v in t.xyxy) and t.verdicts == ("small",)


# -- __post_init__ errors: the field and the shape --------------------------------------------------------------------

OK_FRAME = np.zeros((4, 6, 3), np.uint8)
OK_EMBS = np.zeros((1, 1024), np.float32)


@pytest.mark.parametrize("make,error", [
    (lambda: FrameMsg("c0", 1, 0.0, np.zeros((4, 4), np.uint8)),
     r"frame must be a \(H, W, 3\) uint8 array, got \(4, 4\)"),
    (lambda: FrameMsg("c0", 1, 0.0, np.zeros((4, 4, 3), np.float32)), r"frame must be .*got \(4, 4, 3\) float32"),
    (lambda: FrameMsg("c0", 1, 0.0, np.zeros((0, 4, 3), np.uint8)), r"frame must not be empty, got \(0, 4, 3\)"),
    (lambda: FrameMsg("c0", 1, 0.0, [[1]]), "frame must be a .* array, got list"),
    (lambda: FrameMsg("", 1, 0.0, OK_FRAME), "camera_id must be a string of 1 to"),
    (lambda: FrameMsg("c0", 1.5, 0.0, OK_FRAME), "frame_index must be an int, got float"),
    (lambda: FrameMsg("c0", 1, float("nan"), OK_FRAME), "ts must be finite"),
    (lambda: FrameMsg("c0", 1, 0.0, OK_FRAME, live="yes"), "live must be a bool, got str"),
    (lambda: CropsMsg("c0", 1, 0.0, (entry(row=1),), (OK_FRAME,)),
     r"tracks\[0\]\.row is 1, but the message carries 1 crops"),
    (lambda: CropsMsg("c0", 1, 0.0, ({"track_id": 1},)), r"tracks\[0\] must be a TrackEntry, got dict"),
    (lambda: CropsMsg("c0", 1, 0.0, (), ([1, 2],)), r"crops\[0\] must be a numpy array, got list"),
    (lambda: EmbeddingsMsg("c0", 1, 0.0, (), np.zeros((3, 5, 1), np.float32)),
     r"embeddings must be a \(N, D\) float32 array, got \(3, 5, 1\)"),
    (lambda: EmbeddingsMsg("c0", 1, 0.0, (), np.zeros((3, 4), np.float64)),
     r"embeddings must be .*got \(3, 4\) float64"),
    (lambda: EmbeddingsMsg("c0", 1, 0.0, (entry(row=1),), OK_EMBS), r"tracks\[0\]\.row is 1, but .* 1 embeddings"),
    (lambda: EmbeddingsMsg("c0", 1, 0.0, (), OK_EMBS, jpegs=(b"a", b"b")),
     r"jpegs must be None or one bytes per embedding row \(1\), got 2 items"),
    (lambda: EndMsg(3), "camera_id must be a string"),
    (lambda: entry(state="gone"), "state must be one of .*got 'gone'"),
    (lambda: entry(xyxy=(1, 2, 3, 4, 5)), r"xyxy must be 4 numbers \(x1, y1, x2, y2\), got 5 values"),
    (lambda: entry(xyxy=np.zeros((2, 2))), r"xyxy must be 4 numbers .*got 2 values"),
    (lambda: entry(xyxy=(1, 2, float("inf"), 4)), r"xyxy\[2\] must be finite"),
    (lambda: entry(track_id=True), "track_id must be an int, got bool"),
    (lambda: entry(verdicts=("fuzzy",)), "verdicts must be a sequence of"),
    (lambda: entry(row=-2), "row must be -1 .* got -2"),
    (lambda: entry(quality=-0.5), r"quality must be in \[0, 1\], got -0.5"),  # the matcher weighs crops by it
])
def test_post_init_names_the_field_and_shape(make, error):
    with pytest.raises(MessageError, match=error):
        make()


# -- hostile input ----------------------------------------------------------------------------------------------------


def _head(type_=FRAME, **fields) -> bytes:
    return msgpack.packb({"type": type_, "v": VERSION, **fields})


STREAM = {"camera_id": "c0", "frame_index": 1, "ts": 0.0, "wall_ts": 0.0, "live": False}


@pytest.mark.parametrize("frames,error", [
    ([], "empty message"),
    ([b"\xc1\xc1garbage"], "not valid msgpack"),
    ([msgpack.packb([1, 2])], "not a map"),
    ([_head("pickle", bufs=[])], "unknown message type"),
    ([_head([1], bufs=[])], "unknown message type"),
    ([msgpack.packb({"type": FRAME, "v": 99, "bufs": []})], "unsupported message version"),
    ([_head(bufs=[["uint8", [2, 2]]])], "describes 1 buffers"),
    ([_head(bufs=[["object", [1]]]), b"x"], "invalid description"),
    ([_head(bufs=[[["uint8"], [1]]]), b"x"], "invalid description"),
    ([_head(bufs=[["uint8", [4]]]), b"abc"], "3 bytes, header says 4"),
    ([_head(bufs=[["uint8", [MAX_BUFFER_BYTES + 1]]]), b""], "exceeds"),
    ([_head(bufs=[["uint8", [2**30, 2**30, 16]]]), b""], "exceeds"),  # would wrap to 0 bytes in int64
    ([b"\x00" * 70000], "exceeds"),
    ([_head(bufs=[["uint8", [2, 2, 3]]], **STREAM | {"camera_id": None}), b"\0" * 12], "camera_id must be"),
    ([_head(bufs=[["uint8", [2, 2, 3]]], **{k: v for k, v in STREAM.items() if k != "ts"}), b"\0" * 12],
     "frame message lacks 'ts'"),
    ([_head(bufs=[["uint8", [2, 2]]], **STREAM), b"\0" * 4], r"frame must be a \(H, W, 3\) uint8 array, got \(2, 2\)"),
    ([_head(bufs=[], **STREAM)], "a frame message carries 1 buffer, got 0"),
    ([_head("crops", bufs=[], **STREAM, tracks={})], "tracks must be a list, got dict"),
    ([_head("crops", bufs=[], **STREAM, tracks=[{"track_id": 1}])], r"tracks\[0\] lacks \['state'"),
    ([_head("crops", bufs=[], **STREAM, tracks=[[1, 2]])], r"tracks\[0\] must be a map"),
    ([_head("crops", bufs=[], **STREAM, tracks=[{**{k: 0 for k in ("track_id", "frame_index", "ts", "conf",
                                                                     "quality", "row")},
                                                  "state": "lost", "xyxy": [0, 0, 1], "verdicts": []}])],
     r"tracks\[0\]\.xyxy must be 4 numbers"),
    ([_head("embeddings", bufs=[], **STREAM, tracks=[], jpegs=False)], "carries its embeddings buffer"),
    ([_head("embeddings", bufs=[["float32", [0, 4]], ["uint8", [1]]], **STREAM, tracks=[], jpegs=False), b"", b"x"],
     "without jpegs carries 1 buffer"),
    ([_head("embeddings", bufs=[["float32", [0, 4]], ["float32", [1]]], **STREAM, tracks=[], jpegs=True), b"",
      b"\0" * 4], r"jpegs\[0\] must be a \(L,\) uint8 array, got \(1,\) float32"),
    ([_head("end", bufs=[])], "end message lacks 'camera_id'"),
])
def test_malformed_messages_are_rejected(frames, error):
    with pytest.raises(MessageError, match=error):
        decode(frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_decoder_never_fails_otherwise_on_random_bytes(frames):
    try:
        decode(frames)
    except MessageError:
        pass


SCALARS = st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=6) | st.none() | st.booleans()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*STREAM, "junk"]), SCALARS, max_size=6),
       st.lists(st.tuples(st.sampled_from(["uint8", "float32", "int64"]),
                          st.lists(st.integers(0, 5), max_size=3)), max_size=3),
       st.lists(st.binary(max_size=40), max_size=3))
def test_decoder_never_fails_otherwise_on_forged_frame_headers(fields, bufs, payloads):
    head = msgpack.packb({**STREAM, **fields, "type": FRAME, "v": VERSION, "bufs": [[d, s] for d, s in bufs]})
    try:
        msg = decode([head, *payloads])
    except MessageError:
        return
    assert isinstance(msg, FrameMsg) and msg.frame.dtype == np.uint8 and msg.frame.ndim == 3
    assert [bufs[0][0], list(msg.frame.shape)] == ["uint8", bufs[0][1]]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["crops", "embeddings"]),
       st.lists(st.dictionaries(st.sampled_from(["track_id", "state", "frame_index", "ts", "xyxy", "conf",
                                                  "quality", "verdicts", "row"]),
                                SCALARS | st.sampled_from(["lost", "ended"]) | st.lists(SCALARS, max_size=5),
                                min_size=7), max_size=3),
       st.booleans() | st.none())
def test_decoder_never_fails_otherwise_on_forged_track_entries(type_, tracks, jpegs):
    head = msgpack.packb({**STREAM, "type": type_, "v": VERSION, "tracks": tracks, "jpegs": jpegs,
                          "bufs": [["float32", [1, 4]]]})
    try:
        msg = decode([head, b"\0" * 16])
    except MessageError:
        return
    assert all(isinstance(t, TrackEntry) and -1 <= t.row < 1 for t in msg.tracks)


def test_stage_drops_and_counts_foreign_garbage(tmp_path):
    cfg = example_config(tmp_path)
    stage = EchoStage(cfg)
    with running(stage) as (push, _):
        push.send_multipart([b"\x93\x01\x02\x03", b"junk"])  # msgpack array header, then junk
        push.send(b"\xff" * 100)
        push.send_multipart([_head(bufs=[["uint8", [10, 10, 3]]], **STREAM), b"short"])
        push.send_multipart([_head(bufs=[["uint8", [4, 4]]], **STREAM), b"\0" * 16])  # not a BGR image
        push.send_multipart(encode(FrameMsg("c0", 0, 0.0, np.zeros((4, 4, 3), np.uint8))))
        deadline = time.monotonic() + 10
        while stage.counters["handled"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert stage.counters["malformed"] == 4
    assert stage.counters["handled"] == 1
