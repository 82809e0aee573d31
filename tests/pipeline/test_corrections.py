"""Corrections on real video, the crowded terrace1 clip: tracked without appearance (the tracker that swaps people
at crossings), one track gets an identity the ground later proves wrong, and the match stage moves it and says so;
with the shipped config, a track that comes out of a crossing on another person is split there."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.evaluate_mtmc import read_folder, track_person
from pipeline.events import track_identities, track_parts
from pipeline.supervisor import Supervisor
from pipeline.tracks_out import read_track_log
from reid.paths import PROJECT_ROOT, shared_root

from .conftest import free_port

DURATION_S = 25.0  # the correction falls at 23.4 s of video
SPLIT_DURATION_S = 20.0  # c0's track 3 swaps people at about 13 s


@pytest.mark.slow
def test_a_wrong_identity_on_the_crowded_clip_is_corrected(tmp_path):
    if not (shared_root() / "video" / "epfl_terrace1_crowd").is_dir():
        pytest.skip("the crowded terrace1 clip is not in ../shared")
    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml").with_run_dir(tmp_path)
    det = cfg.detector
    cfg = cfg.model_copy(update={
        "endpoints": cfg.endpoints.model_copy(update={"events": f"tcp://127.0.0.1:{free_port()}"}),
        "detector": det.model_copy(update={"appearance": det.appearance.model_copy(update={"enabled": False})})})
    sup = Supervisor(cfg, replay=True, speed=None, duration_s=DURATION_S, status=False)
    assert sup.run() == 0
    events = list(sup.recorder.spilled())
    fixes = [e for e in events if e["kind"] == "identity.corrected"]
    assert fixes, "the ground check should have moved a track"
    fix = fixes[0]
    assert fix["reason"] in ("corrected:same_place", "corrected:apart")
    assert fix["from_global_id"] != fix["global_id"]
    first = next(e for e in events if (e["camera_id"], e["track_id"]) == (fix["camera_id"], fix["track_id"]))
    assert first["global_id"] == fix["from_global_id"], "it is the track's first identity that was wrong"
    # Whoever keeps a track -> identity map from the events ends with the corrected one.
    assert track_identities(events)[(fix["camera_id"], fix["track_id"])] == fix["global_id"]


@pytest.mark.slow
def test_a_track_that_swapped_people_on_the_crowded_clip_is_split_there(tmp_path):
    """Scored with the ground truth: the person a split track followed in the 2 s before its cut is not the one its
    part follows in the 2 s after; the part gets an identity of its own, and the events label its boxes with it."""
    clip = shared_root() / "video" / "epfl_terrace1_crowd"
    if not clip.is_dir():
        pytest.skip("the crowded terrace1 clip is not in ../shared")
    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml").with_run_dir(tmp_path)
    cfg = cfg.model_copy(update={
        "endpoints": cfg.endpoints.model_copy(update={"events": f"tcp://127.0.0.1:{free_port()}"})})
    sup = Supervisor(cfg, replay=True, speed=None, duration_s=SPLIT_DURATION_S, status=False, track_log=True)
    assert sup.run() == 0
    events = list(sup.recorder.spilled())
    splits = [e for e in events if e["kind"] == "track.split"]
    assert splits, "the swap at 13 s in c0 should have been split"
    gt, owner = read_folder(clip / "gt"), track_identities(events)
    for split in splits:
        cam, frame, part, track = split["camera_id"], split["frame_index"], split["part_track_id"], split["track_id"]
        assert track_parts(events)[(cam, track)] == (frame, part)
        log = read_track_log(tmp_path, cam, track_parts(events))
        before = [f for f in log.times if split["video_ts"] - 2 <= log.times[f] < split["video_ts"]]
        after = [f for f in log.times if split["video_ts"] <= log.times[f] < split["video_ts"] + 2]
        was, became = track_person(log.boxes, track, gt[cam], before), track_person(log.boxes, part, gt[cam], after)
        assert was != became and min(was, became) >= 0, f"{cam}/{track} kept its person ({was} then {became})"
        assert owner.get((cam, part)) not in (None, split["global_id"])
        ids_after = {int(r[0]) for f in log.boxes if f >= frame for r in log.boxes[f]}
        assert part in ids_after and track not in ids_after
