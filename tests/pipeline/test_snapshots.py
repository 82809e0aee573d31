"""Camera snapshots: the detect stage's file (a real EPFL frame, its boxes and track ids) read back and drawn with
the global ids of a real identity store, each box in its identity's colour or grey while undecided."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.render import identity_colour
from pipeline.snapshots import SnapshotError, SnapshotWriter, read_snapshot, render_snapshot, snapshot_path
from pipeline.sources import video_frames
from reid.identity.config import MatcherConfig
from reid.identity.records import Identity, TrackRef
from reid.identity.store import IdentityStore
from tests.redis_server import redis_server, redis_url  # noqa: F401 - fixtures

from .conftest import example_config

DECIDED, UNDECIDED = 1_000_003, 1_000_004  # detect stage instance 1's tracks 3 and 4
BOXES = np.array([[100, 60, 180, 220], [220, 40, 300, 200]], np.float32)  # in the 360x288 frame


def first_frame(tmp_path) -> np.ndarray:
    source = example_config(tmp_path / "run").cameras[0].source
    return next(iter(video_frames(source)))[2]


def edge_colour(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Median colour of the box's left edge (the label sits on the top edge)."""
    x1, y1, _, y2 = (int(v) for v in box)
    return np.median(img[y1 + 20:y2 - 5, x1:x1 + 1].reshape(-1, 3), axis=0)


def test_a_snapshot_is_labelled_with_the_global_ids_the_store_holds(tmp_path, redis_url):  # noqa: F811
    frame = first_frame(tmp_path)
    writer = SnapshotWriter(tmp_path / "snapshots", every_s=60)
    assert writer.due("c0") and writer.write("c0", 12, 0.48, frame, BOXES, [DECIDED, UNDECIDED])
    assert not writer.due("c0")  # within every_s: the next frame is skipped

    snap = read_snapshot(snapshot_path(tmp_path / "snapshots", "c0"))
    assert (snap.camera, snap.frame_index, snap.track_ids) == ("c0", 12, [DECIDED, UNDECIDED])
    np.testing.assert_allclose(snap.boxes, BOXES)  # 360 px wide: not downscaled

    ident = Identity(0, np.eye(1, 1024, dtype=np.float32), np.ones(1, np.float32), 0.0, 0.5, "c0", 1, 1,
                     [TrackRef("c0", DECIDED, 0.0, 0.5, 1)], ("c0", DECIDED))
    store = IdentityStore.from_config(MatcherConfig(), redis_url)
    gid = store.create_identity(ident, TrackRef("c0", DECIDED, 0.0, 0.5, 1)).global_id
    img = cv2.imdecode(np.frombuffer(render_snapshot(snap, store.lookup_tracks), np.uint8), cv2.IMREAD_COLOR)
    store.close()
    assert img.shape == frame.shape
    assert np.abs(edge_colour(img, BOXES[0]) - identity_colour(gid)).max() < 40
    assert np.abs(edge_colour(img, BOXES[1]) - (160, 160, 160)).max() < 40
    assert np.abs(edge_colour(img, BOXES[1] + [5, 0, 5, 0]) - edge_colour(frame, BOXES[1] + [5, 0, 5, 0])).max() < 40


def test_a_wide_frame_is_downscaled_with_its_boxes(tmp_path):
    wide = cv2.resize(first_frame(tmp_path), (960, 768))
    SnapshotWriter(tmp_path, every_s=1).write("c1", 0, 0.0, wide, BOXES * 960 / 360, [7, 8])
    snap = read_snapshot(snapshot_path(tmp_path, "c1"))
    img = cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[1] == SnapshotWriter.MAX_WIDTH
    np.testing.assert_allclose(snap.boxes, BOXES * 480 / 360, atol=0.1)


def test_a_broken_snapshot_file_is_a_clear_error(tmp_path):
    path = snapshot_path(tmp_path, "c0")
    path.write_bytes(b"\x93\x01\x02")  # msgpack, but not a snapshot
    with pytest.raises(SnapshotError, match="c0.snap: not a snapshot"):
        read_snapshot(path)
    path.write_bytes(b"")
    with pytest.raises(SnapshotError, match="not a snapshot"):
        read_snapshot(path)
    with pytest.raises(FileNotFoundError):
        read_snapshot(snapshot_path(tmp_path, "c9"))
