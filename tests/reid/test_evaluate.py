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
