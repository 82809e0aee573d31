"""How right ``reid.adapt``'s pseudo-identities are, scored with the ground truth they are built without.

    python benchmarks/pseudo_labels.py [--clips terrace1 crowd] [--quantiles 0.9 0.95 0.99] [--compare-cuts]

Each annotated terrace1 clip is harvested once (the pipeline's detector and tracker, as ``reid.adapt`` does) and
labelled with its calibration (cross-camera merges on the ground) and with the calibration hidden (merges on
appearance, :func:`reid.adapt.pseudo.build_labels`, at each ``--quantiles`` of the cross-camera pairs the video
proves to be two people; the shipped default is marked), as ``reid.adapt`` labels them: a calibrated camera's
tracks cut where they come out of a crossing (:func:`reid.adapt.harvest.split_at_crossings`), an uncalibrated
camera's whole. ``--compare-cuts`` adds the calibrated cameras' whole tracks (the rule before) and the cut tracks
with the calibration hidden. Per row:

- labels / people: pseudo-identities kept, and the people the ground truth sees in the harvested tracks;
- cross pairs right: of the pairs of tracks from two cameras sharing a label, how many are one person (each
  track's person: the ground-truth person most of its boxes match at IoU 0.5);
- purity: the share of the training crops whose track is its label's main person;
- crop purity: the share of the training crops that are themselves their label's main person (each crop's
  person: the ground-truth box its box matches at IoU 0.5; crops matching nobody are left out and counted in
  "nobody"): what a swap inside a track costs, which track purity cannot see;
- threshold: the similarity an appearance merge needed.

The baseline row of each clip is the rule before this benchmark existed: the threshold set on the co-visible
pairs of one camera (99th percentile), tracks merged one pair at a time. Ground truth is used only to score.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mtmc_accuracy import CLIPS  # noqa: E402

from pipeline.evaluate_mtmc import MotSequence, person_votes, read_folder  # noqa: E402
from reid.adapt.__main__ import track_embeddings  # noqa: E402
from reid.adapt.harvest import Recording, harvest, split_at_crossings  # noqa: E402
from reid.adapt.pseudo import PseudoLabels, build_labels  # noqa: E402
from reid.log import setup_logging  # noqa: E402
from reid.paths import DEFAULT_WEIGHTS, PROJECT_ROOT, shared_root  # noqa: E402

FPS = 25  # the terrace1 clips' frame rate: ground-truth frame = video time x FPS + 1
DEFAULT_QUANTILE = inspect.signature(build_labels).parameters["appearance_quantile"].default


def track_people(rec: Recording, gt: dict[str, MotSequence]) -> dict[tuple[str, str, int], int]:
    """Each harvested track's ground-truth person (-1: most of its boxes match nobody)."""
    out = {}
    for t in rec.tracks:
        votes = person_votes(t.ts, t.boxes, gt[t.camera_id], FPS)
        out[t.key] = votes.most_common(1)[0][0] if votes else -1
    return out


def crop_people(rec: Recording, gt: dict[str, MotSequence]) -> dict[tuple[str, str, int], list[int]]:
    """Each harvested track's crops' ground-truth persons, in crop order (-1: the crop's box matches nobody)."""
    out = {}
    for t in rec.tracks:
        box_at = dict(zip(t.ts, t.boxes, strict=True))
        out[t.key] = [next(iter(person_votes([c.ts], [box_at[c.ts]], gt[t.camera_id], FPS))) for c in t.crops]
    return out


def score(rec: Recording, labels: PseudoLabels, person: dict, crop_person: dict) -> dict:
    crops = {t.key: len(t.crops) for t in rec.tracks}
    pairs = right = 0
    by_label: dict[int, list] = {}
    for key, lab in labels.labels.items():
        by_label.setdefault(lab, []).append(key)
    main = crop_main = crop_total = nobody = 0
    for keys in by_label.values():
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if a[1] != b[1]:
                    pairs += 1
                    right += person[a] == person[b] != -1
        weight: Counter[int] = Counter()
        for k in keys:
            weight[person[k]] += crops[k]
        main += max(weight.values())
        seen = Counter(p for k in keys for p in crop_person[k] if p != -1)
        crop_main += seen.most_common(1)[0][1] if seen else 0
        crop_total += sum(seen.values())
        nobody += sum(p == -1 for k in keys for p in crop_person[k])
    total = sum(crops[k] for k in labels.labels)
    return {"labels": labels.num_labels, "people": len({p for k, p in person.items() if k in labels.labels} - {-1}),
            "pairs": pairs, "right": right, "purity": main / max(total, 1), "threshold": labels.appearance_threshold,
            "crops": total, "crop_purity": crop_main / max(crop_total, 1), "nobody": nobody}


def old_rule(rec: Recording, emb: dict) -> PseudoLabels:
    """Before: one camera's co-visible pairs set the bar (99th percentile); tracks merged a pair at a time."""
    from reid.adapt import pseudo

    with patch.object(pseudo, "cross_camera_negatives", _co_visible_pairs), \
            patch.object(pseudo, "_merge_on_appearance", _pairwise):
        return build_labels([rec], emb, appearance_quantile=0.99)


def _co_visible_pairs(tracks, pairs, embeddings):  # noqa: ANN001, ANN202 - the replaced function's signature
    from reid.adapt.pseudo import overlapping

    return [float(embeddings[a.key] @ embeddings[b.key]) for i, a in enumerate(tracks) for b in tracks[i + 1:]
            if a.camera_id == b.camera_id and overlapping(a, b) and a.key in embeddings and b.key in embeddings]


def _pairwise(groups, pairs, embeddings, threshold):  # noqa: ANN001, ANN202
    sim = {(a, b): float(embeddings[a] @ embeddings[b]) for a, b in pairs if a in embeddings and b in embeddings}
    best: dict = {}
    for (a, b), s in sim.items():
        for x, y in ((a, b), (b, a)):
            best[(x, y[1])] = max(best.get((x, y[1]), -2.0), s)
    made = refused = 0
    for s, a, b in sorted(((s, a, b) for (a, b), s in sim.items()), reverse=True):
        if s >= threshold and s >= best[(a, b[1])] and s >= best[(b, a[1])]:
            done = groups.merge(a, b)
            made += done is True
            refused += done is False
    return made, refused


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/pseudo_labels.py", description=__doc__.split("\n")[0])
    p.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=["terrace1", "crowd"])
    p.add_argument("--quantiles", nargs="+", type=float, default=[0.9, DEFAULT_QUANTILE, 0.99])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="starting weights of the appearance merges")
    p.add_argument("--compare-cuts", action="store_true",
                   help="also label the calibrated cameras' whole tracks (the rule before they were cut at "
                        "crossings), and the cut tracks with the calibration hidden")
    args = p.parse_args(argv)
    setup_logging(30)
    rows = []
    for name in args.clips:
        config, folder = CLIPS[name]
        harvested = harvest(PROJECT_ROOT / "configs" / config, progress=True)
        gt = read_folder(shared_root() / "video" / folder / "gt")
        cut = split_at_crossings(harvested)
        hidden = replace(harvested, cameras=dict.fromkeys(harvested.cameras, None), geometry=None)
        emb = track_embeddings([hidden], args.weights)
        variants = [("calibrated (ground)", cut, None)]
        if args.compare_cuts:
            variants.append(("calibrated (ground), whole tracks", harvested, None))
        variants.append(("hidden, baseline (one camera's pairs, q0.99)", hidden, old_rule))
        variants += [(f"hidden, q{q}" + (" (default)" if q == DEFAULT_QUANTILE else ""), hidden, q)
                     for q in args.quantiles]
        if args.compare_cuts:  # what cutting would do where only appearance can join the pieces again
            cut_hidden = replace(cut, cameras=hidden.cameras, geometry=None)
            variants.append((f"hidden, q{DEFAULT_QUANTILE}, tracks cut at crossings", cut_hidden, DEFAULT_QUANTILE))
        for how, rec, rule in variants:
            person, crop_person = track_people(rec, gt), crop_people(rec, gt)
            rec_emb = emb if rec is hidden else track_embeddings([rec], args.weights)
            labels = rule(rec, rec_emb) if callable(rule) else \
                build_labels([rec], rec_emb) if rule is None else build_labels([rec], rec_emb, appearance_quantile=rule)
            rows.append((name, how, score(rec, labels, person, crop_person)))
    print(f"Pseudo-identities against the ground truth; {platform.machine()} CPU x{os.cpu_count()}; weights "
          f"{args.weights.name}; calibration hidden = merges on appearance")
    print(f"{'clip':<10}{'labelling':<62}{'labels':>7}{'people':>7}{'cross pairs right':>19}{'crops':>7}"
          f"{'purity':>8}{'crop purity':>12}{'nobody':>8}{'threshold':>10}")
    for name, how, r in rows:
        share = f"{r['right']}/{r['pairs']}" + (f" ({r['right'] / r['pairs']:.2f})" if r["pairs"] else "")
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        print(f"{name:<10}{how:<62}{r['labels']:>7}{r['people']:>7}{share:>19}{r['crops']:>7}{r['purity']:>8.3f}"
              f"{r['crop_purity']:>12.3f}{r['nobody']:>8}{thr:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
