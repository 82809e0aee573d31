"""Learning curves: any history key, with reference lines (the paper's final figure)."""

from __future__ import annotations

import json

import matplotlib.image as mpimg

from reid.visualize import main


def test_curves_of_a_prefixed_metric_with_a_level(tmp_path):
    history = [{"epoch": e, "market1501/mAP": 50 + 5 * e, "mAP": 40.0} for e in (1, 2, 3)]
    (tmp_path / "h.json").write_text(json.dumps(history))
    out = tmp_path / "c.png"
    assert main(["curves", str(out), f"run={tmp_path / 'h.json'}+2", "--metric", "market1501/mAP",
                 "--level", "paper=75.7"]) == 0
    image = mpimg.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 500
