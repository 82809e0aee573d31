"""The linking benchmark CLI: tracks from real CUHK03 crops, its scenarios, and a run with a real Redis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid.link_bench import build_tracks, main, scenario
from tests.reid.identity.vectors import unit


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
