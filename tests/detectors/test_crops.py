"""Crops: boxes clamped to the frame, views not copies, padding, and quality verdicts on a real frame."""

import cv2
import numpy as np
import pytest

from detectors.crops import CropQuality, QualityConfig, assess_quality, clamp_boxes, crop_views, pixel_boxes


def test_clamp_boxes_keeps_boxes_inside_the_frame():
    boxes = np.array([[-10, -5, 50, 60], [700, 400, 900, 500], [10, 10, 20, 20]], np.float32)
    out = clamp_boxes(boxes, (432, 768, 3))
    assert out.dtype == np.float32
    assert out.tolist() == [[0, 0, 50, 60], [700, 400, 768, 432], [10, 10, 20, 20]]
    assert boxes[0, 0] == -10  # the input is left alone


def test_crop_views_share_memory_and_pad_within_the_frame():
    frame = np.random.default_rng(1).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    boxes = np.array([[10.2, 20.7, 30.1, 80.0], [90, 100, 130, 140], [200, 200, 210, 210]], np.float32)
    views = crop_views(frame, boxes)
    assert views[0].shape == (60, 21, 3)  # floor/ceil outwards: rows 20..80, cols 10..31
    assert np.shares_memory(views[0], frame) and views[0].base is not None
    assert views[1].shape == (20, 10, 3)  # clamped to the frame's corner
    assert views[2].size == 0  # wholly outside: empty, not an error
    padded = pixel_boxes(boxes[:1], frame.shape, pad_frac=0.1)[0]
    assert padded.tolist() == [8, 14, 33, 86]
    assert pixel_boxes(np.array([[0, 0, 100, 120]]), frame.shape, pad_frac=0.5).tolist() == [[0, 0, 100, 120]]
    with pytest.raises(ValueError, match="pad_frac"):
        crop_views(frame, boxes, pad_frac=-0.1)


@pytest.fixture(scope="module")
def person(indoor_frames, indoor_dets):
    """Frame 800 of the indoor clip (the person stands mid-room) and the detector's box for them."""
    i = 60
    assert len(indoor_dets[i]) == 1
    return indoor_frames[i], indoor_dets[i].xyxy[0], indoor_dets[i].conf[0]


def test_a_well_seen_person_gets_no_verdict(person):
    frame, box, conf = person
    (q,) = assess_quality(frame, box[None], np.array([conf]))
    assert isinstance(q, CropQuality) and q.ok, q.verdicts
    assert 0.5 < q.score <= 1.0


def test_hand_made_boxes_get_their_verdicts(person):
    frame, box, _ = person
    boxes = np.array([
        [100, 100, 112, 124],  # tiny
        [0, 60, 120, 330],  # touches the left edge
        [300, 380, 500, 432],  # runs out of the bottom
        [100, 100, 400, 200],  # wider than tall
    ], np.float32)
    qs = assess_quality(frame, boxes)
    assert "small" in qs[0].verdicts
    assert "edge" in qs[1].verdicts and "small" not in qs[1].verdicts
    assert "edge" in qs[2].verdicts
    assert "aspect" in qs[3].verdicts
    assert all(0.0 <= q.score <= 1.0 for q in qs)
    assert max(q.score for q in qs) < assess_quality(frame, box[None])[0].score


def test_a_blurred_real_crop_is_blur(person):
    frame, box, conf = person
    blurred = cv2.GaussianBlur(frame, (0, 0), 6)
    (sharp,) = assess_quality(frame, box[None], np.array([conf]))
    (soft,) = assess_quality(blurred, box[None], np.array([conf]))
    assert "blur" not in sharp.verdicts
    assert "blur" in soft.verdicts
    assert soft.score < 0.5 * sharp.score


def test_quality_config_rejects_impossible_thresholds():
    with pytest.raises(ValueError, match="min_aspect"):
        QualityConfig(min_aspect=3.0, max_aspect=2.0)
    assert assess_quality(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4), np.float32)) == []
