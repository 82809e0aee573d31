"""--tracks-out: the MOTChallenge files of a run, checked by hand on a made-up run directory and end to end on a
short real replay whose files the evaluator reads back."""

from __future__ import annotations

import json

import pytest

from pipeline.evaluate_mtmc import evaluate, read_folder, read_frames
from pipeline.tracks_out import write_tracks
from reid.paths import PROJECT_ROOT
from run_pipeline import main

from .conftest import free_port


def test_labels_frames_and_format(tmp_path):
    run = tmp_path / "run"
    (run / "tracks").mkdir(parents=True)
    lines = [{"f": 0, "ts": 0.0, "t": [[7, 10, 20, 50, 120, 0.9], [8, 100, 20, 140, 120, 0.8]]},
             {"f": 5, "ts": 0.2, "t": [[7, 12, 20, 52, 120, 0.9]]},
             {"f": 10, "ts": 0.4, "t": []}]  # a frame the detector ran on with nobody in it
    (run / "tracks" / "c0.0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    events = [{"kind": "identity.new", "camera_id": "c0", "track_id": 7, "global_id": 3}]  # track 8: never matched
    write_tracks(run, ["c0"], events, tmp_path / "out")
    assert (tmp_path / "out" / "c0.txt").read_text().splitlines() == [
        "1,3,10.0,20.0,40.0,100.0,0.900,-1,-1,-1", "6,3,12.0,20.0,40.0,100.0,0.900,-1,-1,-1"]
    assert read_frames(tmp_path / "out") == {"c0": [1, 6, 11]}


def test_a_track_split_at_a_swap_is_labelled_by_its_parts(tmp_path):
    run = tmp_path / "run"
    (run / "tracks").mkdir(parents=True)
    lines = [{"f": f, "ts": f / 25, "t": [[7, 10 + f, 20, 50 + f, 120, 0.9]]} for f in (0, 5, 10, 15)]
    (run / "tracks" / "c0.0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    part = 7 + 1_000_000_000
    events = [{"kind": "identity.new", "camera_id": "c0", "track_id": 7, "global_id": 3},
              {"kind": "track.split", "camera_id": "c0", "track_id": 7, "global_id": 3, "frame_index": 10,
               "part_track_id": part},
              {"kind": "identity.moved", "camera_id": "c0", "track_id": part, "global_id": 5}]
    write_tracks(run, ["c0"], iter(events), tmp_path / "out")
    labels = [(int(line.split(",")[0]), int(line.split(",")[1]))
              for line in (tmp_path / "out" / "c0.txt").read_text().splitlines()]
    assert labels == [(1, 3), (6, 3), (11, 5), (16, 5)]


@pytest.mark.slow
def test_run_pipeline_writes_tracks_the_evaluator_reads(tmp_path):
    cfg = tmp_path / "t1.yaml"
    text = (PROJECT_ROOT / "configs" / "terrace1.yaml").read_text().replace("../../shared", str(PROJECT_ROOT.parent /
                                                                                                "shared"))
    cfg.write_text(text.replace("tcp://127.0.0.1:5561", f"tcp://127.0.0.1:{free_port()}"))
    out = tmp_path / "tracks"
    assert main(["--cameras", str(cfg), "--replay", "--speed", "max", "--duration", "8", "--no-status",
                 "--run-dir", str(tmp_path / "run"), "--tracks-out", str(out)]) == 0
    frames = read_frames(out)
    assert frames["c0"][:3] == [1, 6, 11] and len(frames["c0"]) == 40  # 8 s at 5 detections/s, 1-based
    result = evaluate(read_folder(out), read_folder(PROJECT_ROOT.parent / "shared" / "video" / "epfl_terrace1" / "gt"),
                      frames)
    assert result["num_ids"] >= 1 and result["per_camera"]["c1"]["det_recall"] > 0.5
