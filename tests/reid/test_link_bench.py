"""The linking benchmark: its scores on hand-made outcomes, and a run on real CUHK03 crops with a real Redis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid.link_bench import LinkTrack, build_tracks, idf1, link_scores, main, scenario
from reid.matching import MatchResult, TrackSummary

D = 1024


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(D)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_idf1_maps_identities_to_people_one_to_one():
    assert idf1([1, 1, 2, 2], [7, 7, 8, 8]) == 1.0
    assert idf1([1, 1, 2, 2], [7, 7, 7, 7]) == 0.5  # everyone merged: one person's tracks count
    assert idf1([1, 1, 2, 2], [5, 6, 7, 8]) == 0.5  # nobody linked
    assert idf1([1, 1, 1, 2], [5, 5, 6, 6]) == pytest.approx(0.75)


def test_link_scores_classify_each_later_track():
    def lt(cam: int, pid: int) -> LinkTrack:
        return LinkTrack(TrackSummary(f"c{cam}", pid, 0, 1, unit(pid)), pid)

    def res(t: LinkTrack, gid: int, new: bool) -> MatchResult:
        return MatchResult(gid, 0.9, new, t.summary.camera_id, t.summary.track_id)

    cam1 = [lt(1, p) for p in (1, 2, 3)]
    cam2 = [lt(2, p) for p in (1, 2, 3, 4)]
    r1 = [res(t, 10 + i, True) for i, t in enumerate(cam1)]
    r2 = [res(cam2[0], 10, False),  # right identity
          res(cam2[1], 10, False),  # merged into person 1
          res(cam2[2], 13, True),  # person 3 already had identity 12
          res(cam2[3], 14, True)]  # person 4 is new: a new identity is right
    s = link_scores([cam1, cam2], [r1, r2])
    assert (s["correct_link"], s["false_merge"], s["false_new"]) == (0.5, 0.25, 0.25)
    assert s["num_tracks"] == 7 and s["num_linking_tracks"] == 4
    assert s["idf1"] == pytest.approx(idf1([1, 2, 3, 1, 2, 3, 4], [10, 11, 12, 10, 10, 13, 14]))


def test_tracks_are_person_camera_groups_of_the_test_crops(cuhk03):
    samples = cuhk03.query.samples + cuhk03.gallery.samples
    embs = np.tile(np.concatenate([unit(0)[:512] / np.linalg.norm(unit(0)[:512]),
                                   unit(1)[:512] / np.linalg.norm(unit(1)[:512])]), (len(samples), 1))
    batches = build_tracks(samples, embs.astype(np.float32))
    assert [len(b) for b in batches] == [100, 100]
    assert {t.summary.camera_id for t in batches[0]} == {"c1"} and {t.summary.camera_id for t in batches[1]} == {"c2"}
    assert sum(t.summary.num_crops for b in batches for t in b) == len(samples)
    first = batches[0][0].summary
    assert all(t.summary.start_ts == first.start_ts for t in batches[0])  # one camera's tracks co-occur
    open_world = scenario(batches, "stream", unseen_share=0.5, seed=1)
    assert len(open_world[0]) == 50 and len(open_world) == 1 + 100 and all(len(b) == 1 for b in open_world[1:])
    starts = [b[0].summary.start_ts for b in open_world[1:]]
    assert starts == sorted(starts) and len(set(starts)) == 100  # one at a time, never overlapping
    assert sorted(b[0].pid for b in open_world[1:]) == sorted(t.pid for t in batches[1])


def test_cli_on_real_crops_through_redis(tiny_weights, cuhk03_root, tmp_path, capsys):
    assert main(["--data", str(cuhk03_root), "--weights", str(tiny_weights), "--num-ids", "12", "--json",
                 "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("correct_link", "false_merge", "false_new", "idf1", "threshold", "num_tracks"):
        assert k in out
    assert out["num_tracks"] == 24 and out["num_linking_tracks"] == 12
    assert out["correct_link"] + out["false_merge"] + out["false_new"] == pytest.approx(1.0, abs=1e-3)
    assert all(0 <= out[k] <= 1 for k in ("correct_link", "false_merge", "false_new", "idf1"))
    assert out["idf1"] >= 0.5  # camera 1's twelve people are twelve identities whatever the model
    assert (tmp_path / "link_sweep.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "link_sweep.json").read_text())["rows"]
    scenarios = {(r["mode"], r["unseen_share"]) for r in rows}
    assert scenarios == {("batch", 0), ("batch", 0.5), ("stream", 0), ("stream", 0.5)}
    hung = [r for r in rows if r["assignment"] == "hungarian" and r["mode"] == "batch" and r["unseen_share"] == 0]
    assert hung[-1]["false_merge"] <= hung[0]["false_merge"]  # a stricter threshold merges less
    assert hung[-1]["false_new"] >= hung[0]["false_new"]
    at = next(r for r in hung if abs(r["threshold"] - out["threshold"]) < 1e-9)
    assert at["idf1"] == pytest.approx(out["idf1"], abs=1e-4)  # the in-memory sweep agrees with Redis


def test_cli_reports_missing_weights(tmp_path, cuhk03_root):
    assert main(["--data", str(cuhk03_root), "--weights", str(tmp_path / "none.pt")]) == 2
