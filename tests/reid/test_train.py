"""Training runs on a small identity subset of the real CUHK03 crops."""

import json

import torch

from reid.train import main
from reid.weights import load_model, read_weights


def _run(data, out, *extra):
    args = ["--data", str(data), "--out", str(out), "--num-ids", "10", "--batch-size", "16", "--device", "cpu", *extra]
    assert main(args) == 0
    return json.loads((out / "history.json").read_text())


def test_smoke_run_loss_falls_and_weights_load(cuhk03_root, tmp_path):
    history = _run(cuhk03_root, tmp_path, "--epochs", "5", "--eval-every", "0", "--lr", "1e-3",
                   "--label-smoothing", "0.1", "--pad", "4")
    losses = [h["loss"] for h in history]
    assert len(losses) == 5
    assert losses[-1] < 0.8 * losses[0], losses
    model = load_model(tmp_path / "model.pt")
    assert model.card["epochs"] == 5 and model.card["train_ids"] == 10
    assert model.card["recipe"]["label_smoothing"] == 0.1
    emb = model(torch.rand(2, 3, 160, 64))
    assert emb.shape == (2, 1024)


def test_resume_continues_exactly(cuhk03_root, tmp_path):
    common = ("--schedule", "constant", "--eval-every", "0", "--triplet-weight", "1", "--pad", "4", "--erase-p", "0.5")
    straight = _run(cuhk03_root, tmp_path / "a", "--epochs", "2", *common)
    _run(cuhk03_root, tmp_path / "b", "--epochs", "1", *common)
    resumed = _run(cuhk03_root, tmp_path / "b", "--epochs", "2", "--resume", *common)
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert [round(h["loss"], 5) for h in resumed] == [round(h["loss"], 5) for h in straight]
    sa = read_weights(tmp_path / "a" / "model.pt")["state_dict"]
    sb = read_weights(tmp_path / "b" / "model.pt")["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)


def test_a_resumed_run_keeps_to_its_time_budget(cuhk03_root, tmp_path):
    """A run its time budget ended is complete: resuming it (as ``reid.adapt --resume`` does after an interruption
    past the last epoch) trains no further epoch."""
    common = ("--epochs", "3", "--eval-every", "0", "--time-budget-s", "0.01")
    assert len(_run(cuhk03_root, tmp_path, *common)) == 1
    assert len(_run(cuhk03_root, tmp_path, *common, "--resume")) == 1


def test_init_with_head_only_epoch_keeps_the_backbone(cuhk03_root, tiny_weights, tmp_path):
    history = _run(cuhk03_root, tmp_path, "--epochs", "1", "--eval-every", "0", "--init", str(tiny_weights),
                   "--head-only-epochs", "1", "--lr", "1e-3")
    assert len(history) == 1
    before = read_weights(tiny_weights)["state_dict"]
    after = read_weights(tmp_path / "model.pt")["state_dict"]
    # the new card keeps the lineage: the card of the weights it started from
    assert read_weights(tmp_path / "model.pt")["card"]["init_card"] == read_weights(tiny_weights)["card"]
    for k, v in before.items():  # parameters and BN statistics untouched; only the (unsaved) heads trained
        torch.testing.assert_close(after[k], v, atol=0, rtol=0, msg=k)
