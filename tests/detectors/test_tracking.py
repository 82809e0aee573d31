"""Per-camera tracking on real video: one id for one person crossing the room, life-cycle events, crops
inside the frame, independent id sequences per camera, and the best-crop selection."""

import numpy as np
import pytest

from detectors.crops import pixel_boxes
from detectors.tracking import BestCropSelector, CameraTracker, TrackerConfigError, tracker_args
from detectors.types import TrackCrop, TrackState
from tests.detectors.clips import INDOOR_CROSSING, INDOOR_FPS


def run(tracker, frames, dets, start=INDOOR_CROSSING[0], fps=INDOOR_FPS):
    events, ids_per_frame = [], []
    for k, (frame, d) in enumerate(zip(frames, dets, strict=True)):
        new = tracker.update(frame, start + k, (start + k) / fps, d)
        for e in new:  # crops are views of *this* frame, valid while it is
            if e.crop is not None:
                assert np.shares_memory(e.crop, frame) or not e.is_view
                check_crop_inside(e, frame)
        events.extend(new)
        ids_per_frame.append(tracker.tracks.track_id.tolist())
    return events, ids_per_frame


def check_crop_inside(e: TrackCrop, frame):
    h, w = frame.shape[:2]
    assert e.crop.size > 0 and e.crop.dtype == np.uint8 and e.crop.shape[2] == 3
    x1, y1, x2, y2 = pixel_boxes(e.xyxy[None], frame.shape)[0]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert e.crop.shape[:2] == (y2 - y1, x2 - x1)


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_one_person_crossing_keeps_one_id(kind, indoor_frames, indoor_dets):
    tracker = CameraTracker("indoor", kind=kind, frame_rate=INDOOR_FPS, lost_timeout_s=1.0)
    events, ids = run(tracker, indoor_frames, indoor_dets)
    tracked = [i for frame_ids in ids for i in frame_ids]
    assert set(tracked) == {1}, f"id switch: {sorted(set(tracked))}"
    assert len(tracked) >= 110  # ~12 s of the 14.5 s stretch, entering to leaving

    states = [e.state for e in events]
    assert states[0] == TrackState.STARTED and events[0].crop is not None
    assert states.count(TrackState.STARTED) == 1
    assert TrackState.LOST in states and states[-1] == TrackState.ENDED  # left at ~867, dropped 1 s later
    assert states.index(TrackState.LOST) < states.index(TrackState.ENDED)
    assert events[-1].crop is None and events[-1].frame_index > 867
    crops = [e for e in events if e.crop is not None]
    assert 2 <= len(crops) <= tracker.selector.max_crops_per_track  # a few chosen crops, not 120
    assert max(e.quality for e in crops) > 0.6  # the standing person, not the edge-cut entry
    assert all(0.0 <= e.quality <= 1.0 for e in events)
    assert tracker.flush() == []  # already ended


def test_selector_spaces_crops_by_video_time_whatever_the_frame_numbering():
    # A 25 fps video detected 5 times a second: frame indices step by 5, video time by 0.2 s. The crops of a
    # person getting clearer go out a second of video apart, not every 5 frames (one detection apart).
    s = BestCropSelector(max_crops_per_track=4, min_gap_s=1.0, min_improvement=0.05)
    sent = []
    for k in range(11):
        index = 5 * k
        crop = TrackCrop("cam", 1, TrackState.ACTIVE, index, index / 25, np.zeros(4, np.float32), 0.9, 0.1 + 0.05 * k,
                         (), np.zeros((100, 40, 3), np.uint8))
        if s.offer(crop):
            sent.append(index)
    assert sent == [0, 25, 50]


def test_flush_ends_live_tracks_with_their_best_unsent_crop(indoor_frames, indoor_dets):
    tracker = CameraTracker("indoor", frame_rate=INDOOR_FPS,
                            selector=BestCropSelector(max_crops_per_track=3, min_gap_s=1000.0))
    events, _ = run(tracker, indoor_frames[:80], indoor_dets[:80])
    assert [e.state for e in events] == [TrackState.STARTED]  # the gap holds back every later crop
    final = tracker.flush()
    assert [e.state for e in final] == [TrackState.ACTIVE, TrackState.ENDED]
    assert final[0].quality > events[0].quality + 0.05 and not final[0].is_view  # a kept copy, not a view
    assert final[0].frame_index > events[0].frame_index
    assert final[1].crop is None and final[1].track_id == 1
    more, _ = run(tracker, indoor_frames[80:100], indoor_dets[80:100], start=INDOOR_CROSSING[0] + 80)
    assert [e.track_id for e in more if e.state == TrackState.STARTED] == [2]  # ids go on after a flush


def test_two_cameras_have_independent_id_sequences(indoor_frames, indoor_dets, epfl_frames, detector_320):
    epfl_dets = []
    for i in range(0, len(epfl_frames), 4):
        epfl_dets.extend(detector_320.detect(epfl_frames[i:i + 4]))
    a = CameraTracker("indoor", frame_rate=INDOOR_FPS)
    a_events = []
    for k in range(5):  # camera a is already running when camera b's tracker is made
        a_events += a.update(indoor_frames[k], k, k / INDOOR_FPS, indoor_dets[k])
    b = CameraTracker("epfl-c0", frame_rate=25.0)
    b_events = []
    for k in range(len(epfl_frames)):  # interleaved, as one detect+track process serving both
        ka = 5 + k
        a_events += a.update(indoor_frames[ka], ka, ka / INDOOR_FPS, indoor_dets[ka])
        b_events += b.update(epfl_frames[k], k, k / 25.0, epfl_dets[k])
    b_events += b.flush()
    a_events += a.flush()
    a_ids = sorted({e.track_id for e in a_events})
    b_ids = sorted({e.track_id for e in b_events})
    assert a_ids == [1]
    assert len(b_ids) >= 3 and b_ids == list(range(1, len(b_ids) + 1))
    assert {e.camera_id for e in a_events} == {"indoor"} and {e.camera_id for e in b_events} == {"epfl-c0"}
    for events in (a_events, b_events):  # every track that started also ended
        started = {e.track_id for e in events if e.state == TrackState.STARTED}
        assert started == {e.track_id for e in events if e.state == TrackState.ENDED}


def test_tracker_args_come_from_the_ultralytics_yaml_with_checked_overrides():
    args = tracker_args("bytetrack", {"track_buffer": 12})
    assert args.track_buffer == 12 and args.tracker_type == "bytetrack" and args.match_thresh == 0.8
    assert tracker_args("botsort").with_reid is False
    with pytest.raises(TrackerConfigError, match="did you mean track_buffer"):
        tracker_args("bytetrack", {"track_bufer": 12})
    with pytest.raises(TrackerConfigError, match="with_reid must stay False"):
        tracker_args("botsort", {"with_reid": True})
    with pytest.raises(TrackerConfigError, match="tracker kind"):
        CameraTracker("cam", kind="sort")
    assert CameraTracker("cam", frame_rate=25, lost_timeout_s=2.0).args.track_buffer == 50


def _crop(frame_index, quality, track_id=1):
    pixels = np.full((100, 40, 3), frame_index % 255, np.uint8)
    return TrackCrop("cam", track_id, TrackState.ACTIVE, frame_index, frame_index / 10, np.zeros(4, np.float32),
                     0.9, quality, (), pixels[:, :])


def test_selector_sends_first_then_better_spread_crops():
    s = BestCropSelector(max_crops_per_track=3, min_gap_s=1.0, min_improvement=0.05)
    sent = [f for f, q in [(0, 0.2), (1, 0.8), (5, 0.85), (10, 0.5), (12, 0.9), (30, 0.92), (45, 0.99)]
            if s.offer(_crop(f, q))]
    # first at once; 1 and 5 too soon after it; 10 worse than 5 nearby; 12 sent; 30 and 45 over the live budget
    assert sent == [0, 12]
    kept = s.kept(1)
    assert [c.frame_index for c in kept] == [45, 30, 12]
    assert all(not c.is_view for c in kept)
    gaps = sorted(c.frame_index for c in kept)
    assert all(b - a >= 10 for a, b in zip(gaps, gaps[1:], strict=False))
    final = s.finish(1)
    assert final is not None and final.frame_index == 45
    assert s.finish(1) is None and s.kept(1) == []


def test_selector_sends_a_crop_at_each_crossing_exit_within_its_own_budget():
    # Crops at 0.1 s steps (_crop: frame / 10). The regular budget is spent at once; crossing exits go out besides,
    # a second apart at least, two at most; without crossing crops an exit is an ordinary offer.
    s = BestCropSelector(max_crops_per_track=1, min_gap_s=1.0, crossing_crops=2)
    assert s.offer(_crop(0, 0.5)) and not s.offer(_crop(20, 0.9))
    exits = [f for f in (30, 35, 45, 60, 80) if s.offer(_crop(f, 0.1), crossing_exit=True)]
    assert exits == [30, 45], "35 is within a second of 30; 60 and 80 are over the budget"
    plain = BestCropSelector(max_crops_per_track=1, min_gap_s=1.0)
    assert plain.offer(_crop(0, 0.5)) and not plain.offer(_crop(30, 0.1), crossing_exit=True)
    with pytest.raises(ValueError, match="crossing_crops"):
        BestCropSelector(crossing_crops=-1)
