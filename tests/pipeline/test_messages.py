"""Wire format: round trips, and hostile input from a foreign client dropped and counted, never fatal."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.messages import CROPS, FRAME, MAX_BUFFER_BYTES, MessageError, decode, encode

from .conftest import EchoStage, example_config, running


def test_round_trip_keeps_header_and_arrays():
    frame = np.random.default_rng(0).integers(0, 255, (288, 360, 3), dtype=np.uint8)
    emb = np.random.default_rng(1).random((3, 1024), dtype=np.float32)
    msg = decode([bytes(f) for f in encode(CROPS, {"camera_id": "c0", "ts": 1.5, "tracks": [{"a": 1}]},
                                                  [frame, emb])])
    assert msg.type == CROPS and msg["camera_id"] == "c0" and msg["tracks"] == [{"a": 1}]
    np.testing.assert_array_equal(msg.arrays[0], frame)
    np.testing.assert_array_equal(msg.arrays[1], emb)


@pytest.mark.parametrize("frames,error", [
    ([], "empty message"),
    ([b"\xc1\xc1garbage"], "not valid msgpack"),
    ([msgpack.packb([1, 2])], "not a map"),
    ([msgpack.packb({"type": "pickle", "v": 1, "bufs": []})], "unknown message type"),
    ([msgpack.packb({"type": FRAME, "v": 99, "bufs": []})], "unsupported message version"),
    ([msgpack.packb({"type": FRAME, "v": 1, "bufs": [["uint8", [2, 2]]]})], "describes 1 buffers"),
    ([msgpack.packb({"type": FRAME, "v": 1, "bufs": [["object", [1]]]}), b"x"], "invalid description"),
    ([msgpack.packb({"type": FRAME, "v": 1, "bufs": [["uint8", [4]]]}), b"abc"], "3 bytes, header says 4"),
    ([msgpack.packb({"type": FRAME, "v": 1, "bufs": [["uint8", [MAX_BUFFER_BYTES + 1]]]}), b""], "exceeds"),
    ([b"\x00" * 70000], "exceeds"),
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


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6) | st.none(),
                       max_size=4),
       st.lists(st.tuples(st.sampled_from(["uint8", "float32", "int64"]),
                          st.lists(st.integers(0, 5), max_size=3)), max_size=3),
       st.lists(st.binary(max_size=40), max_size=3))
def test_decoder_never_fails_otherwise_on_forged_headers(header, bufs, payloads):
    head = msgpack.packb({**header, "type": FRAME, "v": 1, "bufs": [[d, s] for d, s in bufs]})
    try:
        msg = decode([head, *payloads])
    except MessageError:
        return
    for arr, (dtype, shape) in zip(msg.arrays, bufs, strict=True):
        assert arr.dtype == np.dtype(dtype) and list(arr.shape) == shape


def test_stage_drops_and_counts_foreign_garbage(tmp_path):
    cfg = example_config(tmp_path)
    stage = EchoStage(cfg)
    with running(stage) as (push, _):
        push.send_multipart([b"\x93\x01\x02\x03", b"junk"])  # msgpack array header, then junk
        push.send(b"\xff" * 100)
        push.send_multipart([msgpack.packb({"type": FRAME, "v": 1, "bufs": [["uint8", [10, 10, 3]]]}), b"short"])
        push.send_multipart(encode(FRAME, {"camera_id": "c0"}, [np.zeros((4, 4, 3), np.uint8)]))
        deadline = time.monotonic() + 10
        while stage.counters["handled"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert stage.counters["malformed"] == 3
    assert stage.counters["handled"] == 1
