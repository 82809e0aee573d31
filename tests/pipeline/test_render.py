"""--save-video: the events the supervisor spilled to the run directory, read back and drawn on the real EPFL
frames; the written video is decoded again and the boxes are found where the track log put them, in the
colour of the global id the events gave the track."""

from __future__ import annotations

import json

import cv2
import numpy as np

from pipeline.events import NEW, SEEN, make_event
from pipeline.recorder import EventRecorder
from pipeline.render import identity_colour, render_videos
from pipeline.sources import video_frames

from .conftest import example_config

LABELLED = (3, [100.0, 60.0, 180.0, 220.0])  # track 3: given global id 7 by the events
UNLABELLED = (4, [220.0, 40.0, 300.0, 200.0])  # track 4: no event, drawn grey with its track id
FIRST_DETECTED = 5  # the track log starts at this frame; the frames before it carry no box
GREY = (160, 160, 160)


def edge_colour(frame: np.ndarray, box: list[float]) -> np.ndarray:
    """Median colour of the box's top edge (2 px line, the corners left out)."""
    x1, y1, x2, _ = map(int, box)
    return np.median(frame[y1:y1 + 2, x1 + 5:x2 - 5].reshape(-1, 3), axis=0)


def test_save_video_labels_tracks_with_the_colour_of_their_global_id(tmp_path):
    cfg = example_config(tmp_path / "run")
    cfg = cfg.model_copy(update={"cameras": cfg.cameras[:1]})  # c0, a real 360x288 recording
    tracks = tmp_path / "run" / "tracks"
    tracks.mkdir(parents=True)
    with open(tracks / "c0.0.jsonl", "w") as f:  # the detect stage's track log: every 5th frame
        for index in range(FIRST_DETECTED, 25, 5):
            f.write(json.dumps({"f": index, "ts": index / 25, "t": [[LABELLED[0], *LABELLED[1]],
                                                                     [UNLABELLED[0], *UNLABELLED[1]]]}) + "\n")

    # Realistic events, more than the recorder keeps in memory: track 3's identity must still reach the video.
    recorder = EventRecorder(tmp_path / "run" / "render_events.jsonl", spill_cameras={"c0"}, keep=4)
    recorder.open()
    seq = iter(range(1, 100))
    recorder.record(make_event(NEW, next(seq), "c0", LABELLED[0], 7, 0.2, 5, LABELLED[1], None))
    for track_id in range(10, 20):  # other tracks of c0 push it out of the in-memory window
        recorder.record(make_event(NEW, next(seq), "c0", track_id, 100 + track_id, 0.4, 10, [0, 0, 9, 9], None))
    recorder.record(make_event(SEEN, next(seq), "door", UNLABELLED[0], 99, 0.5, 12, [0, 0, 9, 9], 0.9))  # live cam
    recorder.close()
    assert len(recorder.recent) == 4 and recorder.count == 12
    assert not any(e["track_id"] == LABELLED[0] for e in recorder.recent)
    spilled = list(recorder.spilled())  # everything of the recorded camera, the live camera's event left out
    assert len(spilled) == 11 and {e["camera_id"] for e in spilled} == {"c0"}
    assert spilled[0]["track_id"] == LABELLED[0] and spilled[0]["global_id"] == 7

    (path,) = render_videos(cfg, iter(spilled), tmp_path / "videos", duration_s=1.0)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    raw = [f for _, _, f in video_frames(cfg.cameras[0].source, 1, 0, 25.0, 1.0)]
    assert len(frames) == len(raw) == 25 and frames[0].shape == raw[0].shape

    colour = np.array(identity_colour(7), float)
    tolerance = 30  # mp4v keeps a 2 px line's colour within a few levels; the scene there is far from it
    for index in (FIRST_DETECTED, 12, 24):  # a detected frame and frames between detections (last boxes kept)
        frame = frames[index]
        assert np.abs(edge_colour(frame, LABELLED[1]) - colour).max() < tolerance, index
        assert np.abs(edge_colour(frame, UNLABELLED[1]) - GREY).max() < tolerance, index
        # the label "id 7" sits above the box in the same colour
        x1, y1 = int(LABELLED[1][0]), int(LABELLED[1][1])
        label = frame[y1 - 16:y1 - 2, x1:x1 + 40].reshape(-1, 3).astype(float)
        assert (np.abs(label - colour).max(axis=1) < 60).sum() >= 15, index
    for index in range(FIRST_DETECTED):  # no box before the track log's first frame: the recording's pixels
        assert np.abs(edge_colour(frames[index], LABELLED[1]) - colour).max() >= tolerance, index
        assert np.abs(edge_colour(frames[index], LABELLED[1]) - edge_colour(raw[index], LABELLED[1])).max() < 20


def test_floor_view_draws_each_identity_route_in_its_colour(tmp_path, shared):
    """terrace1's c0 calibration: a track walking across the floor is drawn on the top view in its global id's
    colour; an uncalibrated config draws nothing."""
    from pipeline.config import load_config
    from pipeline.render import render_floor
    from reid.paths import PROJECT_ROOT

    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1.yaml").with_run_dir(tmp_path / "run")
    (tmp_path / "run" / "tracks").mkdir(parents=True)
    rows = [{"f": 5 * i, "ts": 0.2 * i, "t": [[3, 60 + 8 * i, 80, 100 + 8 * i, 230, 0.9]]} for i in range(20)]
    (tmp_path / "run" / "tracks" / "c0.0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    events = [make_event(NEW, 1, "c0", 3, 9, 0.0, 0, [60, 80, 100, 230])]
    out = render_floor(cfg, events, tmp_path / "floor.png")
    image = cv2.imread(str(out))
    colour = np.array(identity_colour(9))
    assert (np.abs(image.astype(int) - colour).sum(axis=2) < 30).sum() > 200  # the route, in id 9's colour
    assert render_floor(example_config(tmp_path / "plain"), events, tmp_path / "none.png") is None
