"""Learning curves: any history key, with reference lines (the paper's final figure)."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np

import reid.visualize
from reid.visualize import main


def test_curves_of_a_prefixed_metric_with_a_level(tmp_path, monkeypatch):
    history = [{"epoch": e, "market1501/mAP": 50 + 5 * e, "mAP": 40.0} for e in (1, 2, 3)]
    (tmp_path / "h.json").write_text(json.dumps(history))
    out = tmp_path / "c.png"
    figures = []
    close = reid.visualize.plt.close
    monkeypatch.setattr(reid.visualize.plt, "close", lambda fig: (figures.append(fig), close(fig)))
    assert main(["curves", str(out), f"run={tmp_path / 'h.json'}+2", "--metric", "market1501/mAP",
                 "--level", "paper=75.7"]) == 0
    image = mpimg.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 500

    (ax,) = figures[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"run", "paper"}  # the level replaces torchreid's cuhk03 points
    np.testing.assert_array_equal(lines["run"].get_xdata(), [3, 4, 5])  # shifted by +2
    np.testing.assert_array_equal(lines["run"].get_ydata(), [55, 60, 65])  # the prefixed key, not "mAP"
    assert list(lines["paper"].get_ydata()) == [75.7, 75.7]
    assert ax.get_ylabel() == "market1501/mAP (%)"
