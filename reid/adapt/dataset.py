"""The pseudo-labelled crops as a Market-layout dataset, so ``reid.train`` fine-tunes on them unchanged.

The last ``holdout`` share of each camera's video is kept out of training, and the *pseudo-label consistency* is
measured there (Rank-1 / mAP, before and after adaptation): each held-out crop of a track asks which other held-out
crops are its pseudo-identity's, its own track's first and second half in time counting as two cameras. The
positives are the same person seconds later and, with calibrated views, seen from the other view; the hardest
negatives are the people seen at the same time. Only what the video proves without the starting weights counts
(:func:`_checked`). It is a different part of the video from what the network trains on, so fitting the training
crops alone does not raise it.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from reid.adapt.harvest import HarvestError, Recording
from reid.adapt.pseudo import PseudoLabels
from reid.data import UNKNOWN_PAIRS

MANIFEST = "manifest.json"


@dataclass
class DatasetSummary:
    root: Path
    train_crops: int
    train_ids: int
    query_crops: int
    gallery_crops: int

    def as_dict(self) -> dict:
        return {"root": str(self.root), "train_crops": self.train_crops, "train_ids": self.train_ids,
                "query_crops": self.query_crops, "gallery_crops": self.gallery_crops}


def write_dataset(recordings: Sequence[Recording], labels: PseudoLabels, root: Path,
                  holdout: float = 0.2) -> DatasetSummary:
    """Write ``root/bounding_box_train``, ``query`` and ``bounding_box_test`` (replacing what was there).

    Training crops carry their camera, numbered across recordings (``c1``, ``c2``, ... in the order given); the
    held-out pair numbers tracks instead (see the module docstring). Raises :class:`HarvestError` when there is
    too little to train or check on.
    """
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    cam_no: dict[tuple[str, str], int] = {}
    for r in recordings:
        for c in r.cameras:
            cam_no[(r.name, c)] = len(cam_no) + 1
    split_ts = {(r.name, c): (1 - holdout) * d for r in recordings for c, d in r.duration_s.items()}
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
    train_ids: set[int] = set()
    counts: defaultdict[str, int] = defaultdict(int)
    held: defaultdict[int, dict[tuple[str, str, int], list]] = defaultdict(dict)  # label -> track -> crops
    for rec in recordings:
        for t in rec.tracks:
            label = labels.labels.get(t.key)
            if label is None:
                continue
            cam = cam_no[(rec.name, t.camera_id)]
            for k, crop in enumerate(t.crops):
                if crop.ts < split_ts[(rec.name, t.camera_id)]:
                    name = f"{label:04d}_c{cam}s1_{crop.frame_index:06d}_{t.track_id % 100:02d}{k % 100:02d}.jpg"
                    cv2.imwrite(str(root / "bounding_box_train" / name), crop.image)
                    train_ids.add(label)
                    counts["train"] += 1
                else:
                    held[label].setdefault(t.key, []).append(crop)
    checked = _checked(held, labels)
    for n, (label, _, crops) in enumerate(checked):
        for i, crop in enumerate(crops):
            # The track's two halves in time count as two cameras: a crop is never matched within its own half.
            name = f"{label:04d}_c{2 * n + 1 + (2 * i >= len(crops))}s1_{crop.frame_index:06d}_{i % 100:02d}.jpg"
            cv2.imwrite(str(root / "bounding_box_test" / name), crop.image)
            counts["gallery"] += 1
            if i % 2 == 0:  # every other held-out crop also asks: which crops are this one's person?
                cv2.imwrite(str(root / "query" / name), crop.image)
                counts["query"] += 1
    if len(train_ids) < 8:
        raise HarvestError(f"only {len(train_ids)} pseudo-identities to train on (at least 8 are needed): give more "
                           "or longer recorded video")
    if len({label for label, _, crops in checked if len(crops) >= 2}) < 2:
        raise HarvestError("fewer than two pseudo-identities are held out with a track of two crops or more in the "
                           "last part of the video, so the adaptation could not be checked: give longer video")
    (root / UNKNOWN_PAIRS).write_text(json.dumps({"pairs": labels.unknown_pairs()}))
    summary = DatasetSummary(root, counts["train"], len(train_ids), counts["query"], counts["gallery"])
    (root / MANIFEST).write_text(json.dumps({**summary.as_dict(), "cameras": {
        f"c{n}": f"{r}/{c}" for (r, c), n in cam_no.items()}}, indent=1))
    return summary


def _checked(held: dict[int, dict[tuple[str, str, int], list]],
             labels: PseudoLabels) -> list[tuple[int, tuple[str, str, int], list]]:
    """The held-out tracks the check uses, as (label, track, crops in time order): per label, the tracks of one
    evidence group (:attr:`PseudoLabels.evidence`; the one with the most held-out crops). A label's other groups
    were joined to it by the starting weights' appearance: left out, the check neither rewards those weights for
    their own merges nor punishes them for a wrong one."""
    out = []
    for label, tracks in sorted(held.items()):
        groups: defaultdict[tuple[str, str, int], list[tuple[str, str, int]]] = defaultdict(list)
        for key in sorted(tracks):
            groups[labels.evidence[key]].append(key)
        chosen = max(sorted(groups.values()), key=lambda keys: sum(len(tracks[k]) for k in keys))
        out += [(label, key, sorted(tracks[key], key=lambda c: c.ts)) for key in chosen]
    return out


# Each rehearsed source's person and camera ids are moved into a range of their own, so two sources' "person 1"
# (or "camera 1") stay apart in the one rehearsal folder.
SOURCE_PID_OFFSET = 100_000
SOURCE_CAM_OFFSET = 10


def write_rehearsal(sources: Sequence[Path], root: Path, num_ids: int = 150, per_id: int = 8, eval_ids: int = 50,
                    seed: int = 0) -> DatasetSummary:
    """A sample of the source domains the starting weights learnt from, trained on beside the site (rehearsal):
    without it, fine-tuning on a site's handful of people forgets how to tell everyone else apart. ``num_ids``
    training identities (at most ``per_id`` images each) and, to measure what is kept, ``eval_ids`` identities of
    the sources' test splits, shared evenly between the sources. The sources share one folder, so one batch of the
    trainer's dataset-balanced sampler is half site, half source domain however many sources there are. The files
    are links to the sources' images (their licences stay with them), renamed with each source's person and camera
    ids moved apart."""
    from reid.data import load_market, parse_name

    rng = np.random.default_rng(seed)
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)

    def link(samples: list, sub: str, k: int) -> int:
        for s in samples:
            pid, cam = parse_name(s.path)
            name = f"{k * SOURCE_PID_OFFSET + pid}_c{k * SOURCE_CAM_OFFSET + cam}_{s.path.name}"
            (root / sub / name).symlink_to(s.path.resolve())
        return len(samples)

    def pick(samples: list, ids: set[int], most: int | None) -> list:
        by_id: dict[int, list] = defaultdict(list)
        for s in samples:
            if s.pid in ids:
                by_id[s.pid].append(s)
        out = []
        for pid in sorted(by_id):
            group = by_id[pid]
            keep = rng.permutation(len(group))[:most] if most else range(len(group))
            out += [group[i] for i in sorted(keep)]
        return out

    n_ids = n_train = n_query = n_gallery = 0
    for k, source in enumerate(sources):
        ds = load_market(source)
        share = lambda total, k=k: total // len(sources) + (k < total % len(sources))  # noqa: E731
        train_ids = sorted({s.pid for s in ds.train.samples})
        chosen = set(rng.choice(train_ids, min(share(num_ids), len(train_ids)), replace=False).tolist())
        test_ids = sorted({s.pid for s in ds.query.samples})
        checked = set(rng.choice(test_ids, min(share(eval_ids), len(test_ids)), replace=False).tolist())
        n_ids += len(chosen)
        n_train += link(pick(ds.train.samples, chosen, per_id), "bounding_box_train", k)
        n_query += link(pick(ds.query.samples, checked, None), "query", k)
        n_gallery += link(pick(ds.gallery.samples, checked, None), "bounding_box_test", k)
    return DatasetSummary(root, n_train, n_ids, n_query, n_gallery)
