import json

import pytest

from reid.evaluate import main
from reid.weights import WeightsError, load_model


def test_evaluate_cli_json_and_pictures(tiny_weights, cuhk03_root, tmp_path, capsys):
    assert main(["--weights", str(tiny_weights), "--data", str(cuhk03_root), "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_query"] == 451 and out["num_gallery"] == 487
    for k in ("rank1", "rank5", "rank10", "mAP"):
        assert 0 <= out[k] <= 100
    assert out["rank1"] <= out["rank5"] <= out["rank10"]
    # A barely trained model still ranks far better than chance (1 true identity among 100).
    assert out["rank10"] > 15
    for name in ("cmc.png", "ranked.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_missing_or_corrupt_weights_are_clear_errors(tmp_path, cuhk03_root):
    with pytest.raises(WeightsError, match="weights file not found"):
        load_model(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="bad.pt: not a readable weights file"):
        load_model(bad)
    assert main(["--weights", str(bad), "--data", str(cuhk03_root)]) == 2


def test_default_weights_embed_a_real_crop_and_reproduce_their_card(cuhk03_root, capsys):
    """The shipped weights: a real query crop becomes a 1024-d vector with unit halves, and evaluating them on
    cuhk03_p1's test split prints the figures committed in their model card (``test_metrics``, also in the
    READMEs; the card's ``metrics`` are the validation identities' of the last training epoch)."""
    import cv2
    import numpy as np
    import torch

    from reid.paths import DEFAULT_WEIGHTS
    from reid.transforms import preprocess_bgr

    model = load_model(DEFAULT_WEIGHTS)
    crop = cv2.imread(str(sorted((cuhk03_root / "query").glob("*.jpg"))[0]))
    with torch.no_grad():
        emb = model(torch.from_numpy(preprocess_bgr([crop]))).numpy()[0]
    assert emb.shape == (1024,) and np.isfinite(emb).all()
    assert np.allclose([np.linalg.norm(emb[:512]), np.linalg.norm(emb[512:])], 1.0, atol=1e-3)
    assert main(["--data", str(cuhk03_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    card = model.card["test_metrics"]["cuhk03_p1"]
    for k in ("rank1", "rank5", "rank10", "mAP"):
        assert out[k] == pytest.approx(card[k], abs=0.01), k
