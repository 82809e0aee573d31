"""The MTMC evaluator on small hand-made ground truth whose scores are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.evaluate_mtmc import (
    MotFileError,
    evaluate,
    frame_ranges,
    loss_breakdown,
    main,
    read_folder,
    read_frames,
)


def write(folder: Path, cam: str, rows: list[tuple[int, int, float, float]]) -> None:
    """rows: (frame, id, x, y) with a 10x20 box."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{cam}.txt").write_text("".join(f"{f},{i},{x},{y},10,20,1,-1,-1,-1\n" for f, i, x, y in rows))


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path]:
    """One person (gt id 0) in two cameras for 10 frames; a second person (gt id 1) in c0 only.

    Predictions: c0 perfect (global ids 7 and 8); in c1 person 0 is id 7 for frames 1-5, then id 9.
    """
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write(gt, "c0", [(f, 0, 0, 0) for f in range(1, 11)] + [(f, 1, 100, 0) for f in range(1, 11)])
    write(gt, "c1", [(f, 0, 50, 50) for f in range(1, 11)])
    write(pred, "c0", [(f, 7, 0, 0) for f in range(1, 11)] + [(f, 8, 100, 0) for f in range(1, 11)])
    write(pred, "c1", [(f, 7 if f <= 5 else 9, 50, 50) for f in range(1, 11)])
    return gt, pred


def test_known_scores(scene):
    gt, pred = scene
    r = evaluate(read_folder(pred), read_folder(gt))
    c0, c1 = r["per_camera"]["c0"], r["per_camera"]["c1"]
    assert c0["idf1"] == pytest.approx(1.0) and c0["mota"] == pytest.approx(1.0) and c0["id_switches"] == 0
    assert c0["hota"] == pytest.approx(1.0)
    # c1: 10 gt boxes, ids 7 (5) and 9 (5): best one-to-one match has 5 true positives -> IDF1 10 / 20.
    assert c1["idf1"] == pytest.approx(0.5)
    assert c1["id_switches"] == 1 and c1["mota"] == pytest.approx(0.9)
    assert c1["det_recall"] == pytest.approx(1.0) and c1["det_precision"] == pytest.approx(1.0)
    # Across cameras: person 0 is id 7 in 15 of its 20 boxes, person 1 is id 8 in all 10 -> 25 of 30.
    assert r["mtmc_idf1"] == pytest.approx(50 / 60)
    assert r["num_ids"] == 3 and r["num_gt_ids"] == 2


def test_only_detector_frames_count_and_iou_threshold(scene, tmp_path):
    gt, pred = scene
    # The detector ran on frames 1, 3, 5, 7, 9 only: in c1, id 7 on 1, 3, 5 and id 9 on 7, 9.
    (pred / "frames.json").write_text(json.dumps({"c0": frame_ranges([1, 3, 5, 7, 9]), "c1": [[1, 9, 2]]}))
    r = evaluate(read_folder(pred), read_folder(gt), read_frames(pred))
    assert r["per_camera"]["c1"]["frames"] == 5
    assert r["per_camera"]["c1"]["idf1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 2))
    # A box shifted by 6 of its 10 px width has IoU 4/16 = 0.25: a miss and a false positive at IoU 0.5 ...
    shifted = tmp_path / "shifted"
    write(shifted, "c0", [(f, 7, 6, 0) for f in range(1, 11)] + [(f, 8, 100, 0) for f in range(1, 11)])
    write(shifted, "c1", [(f, 7, 50, 50) for f in range(1, 11)])
    r = evaluate(read_folder(shifted), read_folder(gt))
    assert r["per_camera"]["c0"]["det_recall"] == pytest.approx(0.5)
    assert r["per_camera"]["c0"]["det_precision"] == pytest.approx(0.5)
    # ... and a match at IoU 0.2.
    r = evaluate(read_folder(shifted), read_folder(gt), iou=0.2)
    assert r["per_camera"]["c0"]["det_recall"] == pytest.approx(1.0)


def test_frame_ranges_round_trip(tmp_path):
    frames = [1, 2, 3, 10, 15, 20, 25, 26, 40]
    (tmp_path / "frames.json").write_text(json.dumps({"c0": frame_ranges(frames)}))
    assert read_frames(tmp_path) == {"c0": frames}


def test_missing_camera_counts_every_box_missed(scene):
    gt, pred = scene
    (pred / "c1.txt").unlink()
    r = evaluate(read_folder(pred), read_folder(gt))
    assert r["per_camera"]["c1"]["det_recall"] == 0.0 and r["per_camera"]["c1"]["idf1"] == 0.0


def test_bad_input_names_file_and_line(tmp_path, caplog):
    write(tmp_path / "gt", "c0", [(1, 0, 0, 0)])
    bad = tmp_path / "pred"
    bad.mkdir()
    (bad / "c0.txt").write_text("1,3,0,0,10,20\n2,x,0,0,10,20\n")
    with pytest.raises(MotFileError, match=r"c0.txt:2"):
        read_folder(bad)
    assert main(["--tracks", str(bad), "--gt", str(tmp_path / "gt")]) == 2
    assert "c0.txt:2" in caplog.text
    with pytest.raises(MotFileError, match="no <camera>.txt"):
        read_folder(tmp_path / "gt" / "..")  # the folder holds only folders


def test_cli_json(scene, capsys):
    gt, pred = scene
    assert main(["--tracks", str(pred), "--gt", str(gt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"mtmc_idf1", "num_ids", "num_gt_ids", "per_camera"} <= set(out)
    assert {"idf1", "mota", "hota", "id_switches"} <= set(out["per_camera"]["c0"])


def test_loss_breakdown_separates_detector_tracker_and_linking_losses(tmp_path):
    """c0: two people whose tracks swap half-way, plus a false box; c1: one person in two fragments."""
    gt, raw = tmp_path / "gt", tmp_path / "raw"
    write(gt, "c0", [(f, 0, 0, 0) for f in range(1, 11)] + [(f, 1, 100, 0) for f in range(1, 11)])
    write(gt, "c1", [(f, 0, 50, 50) for f in range(1, 11)])
    write(raw, "c0", [(f, 1, 0 if f <= 5 else 100, 0) for f in range(1, 11)]
          + [(f, 2, 100 if f <= 5 else 0, 0) for f in range(1, 11)] + [(f, 3, 300, 0) for f in range(1, 11)])
    write(raw, "c1", [(f, 11 if f <= 5 else 12, 50, 50) for f in range(1, 11)])
    out = loss_breakdown(read_folder(raw), read_folder(gt))
    # Tracker alone: each swapped track is right half the time; the fragments are half each.
    assert out["tracker_alone"]["per_camera"] == pytest.approx({"c0": 20 / 50, "c1": 10 / 20})
    # Perfect linking mends the fragments, not the swap.
    assert out["track_bound"]["per_camera"] == pytest.approx({"c0": 20 / 50, "c1": 1.0})
    # Perfect tracking of these boxes: only the false box is lost (2 * 20 true / (2 * 20 + 10 false)).
    assert out["detection_bound"]["per_camera"] == pytest.approx({"c0": 40 / 50, "c1": 1.0})
    assert out["detection_bound"]["mtmc_idf1"] == pytest.approx(60 / 70)
