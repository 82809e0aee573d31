"""The pseudo-labelled crops as a Market-layout dataset, so ``reid.train`` fine-tunes on them unchanged.

The last ``holdout`` share of each camera's video is kept out of training: its crops of pseudo-identities seen
by at least two cameras form the query/gallery pair on which the *pseudo-label consistency* is measured (Rank-1 /
mAP of finding a track's pseudo-identity in another camera), before and after adaptation. It is a different part
of the video from what the network trains on, so fitting the training crops alone does not raise it.
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

    Cameras are numbered across recordings (``c1``, ``c2``, ... in the order given), so the evaluation never
    counts a match within one camera. Raises :class:`HarvestError` when there is too little to train or check on.
    """
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    cam_no: dict[tuple[str, str], int] = {}
    for r in recordings:
        for c in r.cameras:
            cam_no[(r.name, c)] = len(cam_no) + 1
    split_ts = {(r.name, c): (1 - holdout) * d for r in recordings for c, d in r.duration_s.items()}
    multi = {lab for lab in set(labels.labels.values()) if len(labels.cameras_of(lab)) > 1}
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
    train_ids: set[int] = set()
    counts: defaultdict[str, int] = defaultdict(int)
    held: list[tuple[str, np.ndarray]] = []
    for rec in recordings:
        for t in rec.tracks:
            label = labels.labels.get(t.key)
            if label is None:
                continue
            cam = cam_no[(rec.name, t.camera_id)]
            for k, crop in enumerate(t.crops):
                name = f"{label:04d}_c{cam}s1_{crop.frame_index:06d}_{t.track_id % 100:02d}{k % 100:02d}.jpg"
                if crop.ts < split_ts[(rec.name, t.camera_id)]:
                    cv2.imwrite(str(root / "bounding_box_train" / name), crop.image)
                    train_ids.add(label)
                    counts["train"] += 1
                elif label in multi:
                    held.append((name, crop.image))
    for i, (name, image) in enumerate(sorted(held, key=lambda h: h[0])):
        cv2.imwrite(str(root / "bounding_box_test" / name), image)
        counts["gallery"] += 1
        if i % 2 == 0:  # every other held-out crop also asks: which crops of other cameras are this one?
            cv2.imwrite(str(root / "query" / name), image)
            counts["query"] += 1
    if len(train_ids) < 8:
        raise HarvestError(f"only {len(train_ids)} pseudo-identities to train on (at least 8 are needed): give more "
                           "or longer recorded video")
    if not counts["query"]:
        raise HarvestError("no pseudo-identity is seen by two cameras in the held-out part of the video, so the "
                           "adaptation could not be checked: give recordings whose views overlap (calibrated) or "
                           "longer video")
    summary = DatasetSummary(root, counts["train"], len(train_ids), counts["query"], counts["gallery"])
    (root / MANIFEST).write_text(json.dumps({**summary.as_dict(), "cameras": {
        f"c{n}": f"{r}/{c}" for (r, c), n in cam_no.items()}}, indent=1))
    return summary
