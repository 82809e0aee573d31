"""Detections validate at construction, naming the field; TrackCrop copies its crop only when materialised."""

import numpy as np
import pytest

from detectors.types import Detections, DetectionsError, TrackCrop, TrackState


def test_detections_accept_matching_arrays_and_select_rows():
    d = Detections(np.array([[0, 0, 10, 20], [5, 5, 15, 40]], np.float32), np.array([0.9, 0.4], np.float32),
                   np.array([3, 7], np.int64))
    assert len(d) == 2
    sel = d[d.conf > 0.5]
    assert len(sel) == 1 and sel.track_id.tolist() == [3]
    assert len(d[1]) == 1 and len(Detections.empty()) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": np.zeros((2, 3), np.float32), "conf": np.zeros(2, np.float32)}, "xyxy must have shape (N, 4)"),
        ({"xyxy": np.zeros((2, 4), np.float64), "conf": np.zeros(2, np.float32)}, "xyxy must be float32"),
        ({"xyxy": np.zeros((2, 4), np.float32), "conf": np.zeros(3, np.float32)}, "conf must have shape (2,)"),
        ({"xyxy": np.zeros((2, 4), np.float32), "conf": np.zeros(2, np.float32),
          "track_id": np.zeros(2, np.int32)}, "track_id must be int64"),
        ({"xyxy": [[0, 0, 1, 1]], "conf": np.zeros(1, np.float32)}, "xyxy must be a numpy array"),
    ],
)
def test_detections_errors_name_field_and_shape(kwargs, message):
    with pytest.raises(DetectionsError) as e:
        Detections(**kwargs)
    assert message in str(e.value)


def test_from_arrays_casts_but_still_checks_shapes():
    d = Detections.from_arrays([[1, 2, 3, 4]], [0.5], [9])
    assert d.xyxy.dtype == np.float32 and d.track_id.dtype == np.int64
    assert len(Detections.from_arrays([], [])) == 0
    with pytest.raises(DetectionsError, match="conf must have shape"):
        Detections.from_arrays([[1, 2, 3, 4]], [0.5, 0.6])


def test_track_crop_is_a_view_until_materialized():
    frame = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    view = frame[10:60, 20:40]
    event = TrackCrop("cam", 1, TrackState.STARTED, 0, 0.0, np.array([20, 10, 40, 60], np.float32), 0.9, 0.8, (),
                      view)
    assert event.is_view and np.shares_memory(event.crop, frame)
    sent = event.materialized()
    assert not sent.is_view and not np.shares_memory(sent.crop, frame)
    assert sent.crop.flags.c_contiguous and np.array_equal(sent.crop, view)
    assert sent.materialized() is sent
    assert TrackState.LOST == "lost"


def test_within_roi_keeps_the_boxes_centred_inside():
    from detectors.types import Detections, within_roi

    dets = Detections(np.array([[0, 0, 10, 10], [90, 90, 110, 110], [40, 0, 60, 20]], np.float32),
                      np.array([0.9, 0.8, 0.7], np.float32))
    kept = within_roi(dets, (0, 0, 100, 50))
    assert kept.xyxy.tolist() == [[0, 0, 10, 10], [40, 0, 60, 20]]
    assert within_roi(dets, None) is dets
