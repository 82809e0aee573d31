"""The GPU session's script cannot rot between GPU sessions: its --smoke mode runs the same steps on the CPU (a
pack written and read back, training from the pack with the GPU recipe's options, the embedder rows) on a few
hundred images; and the pack keeps what the trainer needs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.gpu_session import main as gpu_session
from reid.pack import GALLERY, QUERY, TRAIN, PackError, load_pack, write_pack
from reid.weights import load_model


def test_pack_round_trip_keeps_images_and_labels(tmp_path, shared):
    root = shared / "datasets" / "market1501"
    path = write_pack([root], tmp_path, val_ids=3, num_ids=5)
    pack = load_pack(path)
    data = pack.train_set()
    assert int(data.train.labels.max()) == 4 and len(data.train.labels) == len(pack.rows(TRAIN))
    assert set(data.val) == {"market1501"} and len(pack.rows(QUERY)) and len(pack.rows(GALLERY))
    images = pack.images(pack.rows(TRAIN)[:7])
    assert images.shape == (7, 3, 160, 64) and images.dtype == torch.uint8
    assert 40 < float(images.float().mean()) < 200  # decoded pictures, not blank
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["train_ids"] == 5 and card["sha256"] and card["mib"] < 1
    with pytest.raises(PackError, match="over --max-mib"):
        write_pack([root], tmp_path / "small", num_ids=5, max_mib=0.01)
    (tmp_path / "bad.npz").write_bytes(b"not a pack")
    with pytest.raises(PackError, match="not a readable pack"):
        load_pack(tmp_path / "bad.npz")


@pytest.mark.slow
def test_gpu_session_smoke_runs_every_step_on_the_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REID_ENGINE_CACHE", str(tmp_path / "engines"))  # its freshly trained model's ONNX export
    out = tmp_path / "out"
    assert gpu_session(["--smoke", "--out", str(out)]) == 0
    summary = json.loads((out / "session.json").read_text())
    assert summary["smoke"] and summary["epochs"] == 1
    last = summary["last_epoch"]
    assert last["images_per_s"] > 0 and {"share_data", "share_forward", "share_backward"} <= set(last)
    assert abs(sum(last[k] for k in ("share_data", "share_forward", "share_backward")) - 1) < 0.01
    assert "mAP" in last and 0 <= last["mAP"] <= 100
    (row,) = summary["embedders"]  # no GPU here: the CPU path only
    assert row["embedder"] == "cpu onnxruntime fp32" and row["cosine_min"] > 0.999
    assert all(row[f"crops_per_s_b{b}"] > 0 for b in (1, 8, 32))
    model = load_model(out / "model.pt")
    assert next(model.parameters()).dtype == torch.float32 and (out / "history.json").is_file()
    assert np.isfinite(summary["wall_s"]) and "GPU session on cpu" in capsys.readouterr().out
