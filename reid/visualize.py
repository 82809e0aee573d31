"""Pictures a person can check: the CMC curve, ranked lists, the training curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reid.data import Sample, load_image  # noqa: E402

GREEN = (0, 170, 0)
RED = (210, 0, 0)


def plot_cmc(curves: dict[str, np.ndarray], path: Path, title: str = "CMC") -> Path:
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    for label, cmc in curves.items():
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, 100 * np.asarray(cmc), marker="o", label=label)
    ax.set(xlabel="rank", ylabel="matching rate (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_learning_curve(
    runs: dict[str, Sequence[dict]], path: Path, reference: dict[str, tuple[Sequence, Sequence]] | None = None,
    title: str = "HA-CNN on cuhk03_p1 (query 451 / gallery 487)", metric: str = "mAP",
    levels: dict[str, float] | None = None,
) -> Path:
    """``metric`` against epoch for each named run history; ``reference`` adds named (epochs, value) points and
    ``levels`` named horizontal lines (a paper's final figure, say)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    top = 80.0
    for label, history in runs.items():
        evals = [h for h in history if metric in h]
        ax.plot([h["epoch"] for h in evals], [h[metric] for h in evals], marker="o", label=label)
        top = max([top] + [h[metric] for h in evals])
    for label, (ep, vals) in (reference or {}).items():
        ax.plot(ep, vals, marker="s", linestyle=":", color="grey", label=label)
    for i, (label, value) in enumerate((levels or {}).items()):
        ax.axhline(value, linestyle="--", color=("black", "dimgrey", "silver")[i % 3], linewidth=1, label=label)
    ax.set(xlabel="epoch", ylabel=f"{metric} (%)", title=title, ylim=(0, 100 if levels or top > 75 else 80))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _tile(sample: Sample, color: tuple[int, int, int] | None, h: int = 128, w: int = 64) -> np.ndarray:
    img = cv2.resize(load_image(sample.path), (w, h), interpolation=cv2.INTER_AREA)
    if color is not None:
        img = cv2.copyMakeBorder(img[3:-3, 3:-3], 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=color)
    return img


def draw_ranked_lists(
    distmat: np.ndarray,
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    path: Path,
    num_queries: int = 12,
    topk: int = 10,
    seed: int = 0,
) -> Path:
    """Each row: a query, a gap, then its top-k gallery images (green = same identity, red = different).

    Same-identity same-camera gallery images are skipped, as the protocol skips them."""
    rng = np.random.default_rng(seed)
    rows = []
    for qi in sorted(rng.choice(len(query), min(num_queries, len(query)), replace=False)):
        q = query[qi]
        tiles = [_tile(q, None), np.full((128, 16, 3), 255, np.uint8)]
        shown = 0
        for gi in np.argsort(distmat[qi]):
            g = gallery[gi]
            if g.pid == q.pid and g.camid == q.camid:
                continue
            tiles.append(_tile(g, GREEN if g.pid == q.pid else RED))
            shown += 1
            if shown == topk:
                break
        row = np.concatenate(tiles, axis=1)
        rows.append(np.pad(row, ((4, 4), (0, 0), (0, 0)), constant_values=255))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    return path


# torchreid's HA-CNN with its default recipe on the same split and kind of CPU (figures quoted in issue 3)
TORCHREID_DEFAULT = {"torchreid default recipe": ([10, 20, 30], [45.8, 58.3, 60.4])}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reid.visualize curves OUT.png LABEL=HISTORY.json[+OFFSET] ...``: the learning curves of
    several runs in one picture; ``+OFFSET`` shifts a run that continued another one (its epoch 1 is drawn at
    OFFSET + 1)."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m reid.visualize", description=main.__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curves", help="mAP against epoch of training histories, with torchreid's points")
    c.add_argument("out", type=Path)
    c.add_argument("runs", nargs="+", help="LABEL=path/to/history.json, optionally +OFFSET")
    c.add_argument("--metric", default="mAP", help="history key to draw, e.g. market1501/mAP (default: mAP)")
    c.add_argument("--title", default=None)
    c.add_argument("--level", action="append", default=[], metavar="LABEL=VALUE",
                   help="a horizontal reference line (repeatable); replaces torchreid's cuhk03 points")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, _, rest = spec.partition("=")
        path, _, offset = rest.partition("+")
        if not label or not path:
            p.error(f"{spec!r}: expected LABEL=HISTORY.json[+OFFSET]")
        shift = int(offset or 0)
        runs[label] = [{**h, "epoch": h["epoch"] + shift} for h in json.loads(Path(path).read_text())]
    levels = {}
    for spec in args.level:
        label, _, value = spec.rpartition("=")
        levels[label] = float(value)
    extra = {"title": args.title} if args.title else {}
    print(plot_learning_curve(runs, args.out, reference=None if levels else TORCHREID_DEFAULT, metric=args.metric,
                              levels=levels, **extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
