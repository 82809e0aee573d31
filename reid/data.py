"""Re-ID datasets in the Market-1501 layout, and the identity-balanced sampler.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` holding ``PPPP_cC...`` images (Market-1501,
DukeMTMC-reID, MSMT17 and the shared CUHK03 copy all use it). Person id -1 is junk (never scored) and id 0 a
distractor (gallery only). Images are decoded once and kept resized at the network's input size, so training
batches are index lookups and augmentation runs batched on the training device.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Sampler

from reid.paths import IMAGE_SUFFIXES
from reid.transforms import resize_rgb

log = logging.getLogger(__name__)

SPLITS = ("bounding_box_train", "query", "bounding_box_test")
JUNK_PID = -1
DISTRACTOR_PID = 0
_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used; the message names the path."""


@dataclass(frozen=True)
class Sample:
    path: Path
    pid: int
    camid: int


@dataclass
class Split:
    """One split: its samples and, for training, the contiguous labels (0..num_pids-1) of their ids."""

    samples: list[Sample]
    labels: np.ndarray

    @property
    def pids(self) -> np.ndarray:
        return np.array([s.pid for s in self.samples], dtype=np.int64)

    @property
    def camids(self) -> np.ndarray:
        return np.array([s.camid for s in self.samples], dtype=np.int64)

    @property
    def num_pids(self) -> int:
        return len({s.pid for s in self.samples})

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class MarketDataset:
    root: Path
    train: Split
    query: Split
    gallery: Split

    @property
    def num_train_pids(self) -> int:
        return self.train.num_pids

    def summary(self) -> str:
        rows = [("train", self.train), ("query", self.query), ("gallery", self.gallery)]
        return "\n".join(f"  {n:8s} {len(s):6d} images {s.num_pids:5d} ids" for n, s in rows)


def parse_name(path: Path) -> tuple[int, int]:
    """(person id, camera id) of a Market-layout file name; cameras are numbered from 1 in names."""
    m = _NAME.match(path.name)
    if not m:
        raise DatasetError(f"{path}: file name does not follow the Market-1501 pattern 'PPPP_cC...'")
    pid, cam = int(m.group(1)), int(m.group(2))
    if pid < JUNK_PID or cam < 1:
        raise DatasetError(f"{path}: invalid person id {pid} or camera {cam}")
    return pid, cam


def read_split(folder: Path, *, keep_junk: bool = False, keep_distractors: bool = True) -> list[Sample]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: split folder is missing")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder}: split folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    samples = []
    for p in files:
        pid, cam = parse_name(p)
        if pid == JUNK_PID and not keep_junk:
            continue
        if pid == DISTRACTOR_PID and not keep_distractors:
            continue
        samples.append(Sample(p, pid, cam))
    if not samples:
        raise DatasetError(f"{folder}: no usable images (all junk or distractors)")
    return samples


def _labelled(samples: list[Sample], relabel: bool) -> Split:
    if relabel:
        index = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
        labels = np.array([index[s.pid] for s in samples], dtype=np.int64)
    else:
        labels = np.array([s.pid for s in samples], dtype=np.int64)
    return Split(samples, labels)


def load_market(root: str | Path) -> MarketDataset:
    """Read a Market-layout dataset. Junk is dropped everywhere; distractors stay in the gallery only."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder is missing")
    train = read_split(root / "bounding_box_train", keep_distractors=False)
    query = read_split(root / "query", keep_distractors=False)
    gallery = read_split(root / "bounding_box_test", keep_distractors=True)
    return MarketDataset(root, _labelled(train, True), _labelled(query, False), _labelled(gallery, False))


@dataclass
class TrainSet:
    """The training data of one run: one or several datasets with their labels kept apart.

    ``train.labels`` are contiguous over all datasets (dataset 0's people first), ``groups[label]`` is the index
    of the dataset a label came from (for dataset-balanced batches), camera ids are offset by
    ``CAMERA_OFFSET * dataset index`` so that two datasets' "camera 1" stay different cameras, and ``val`` holds
    each dataset's validation (query, gallery) pair carved out of its training identities.
    """

    names: list[str]
    train: Split
    groups: np.ndarray
    val: dict[str, tuple[Split, Split]]
    # (K, 2) pairs of labels that may be one person (a dataset's UNKNOWN_PAIRS): never trained as negatives.
    unknown: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    def summary(self) -> str:
        rows = [f"  train    {len(self.train):6d} images {self.train.num_pids:5d} ids ({', '.join(self.names)})"]
        for name, (q, g) in self.val.items():
            rows.append(f"  val {name}: {len(q)} query / {len(g)} gallery images, {q.num_pids} ids")
        return "\n".join(rows)


CAMERA_OFFSET = 100
# A dataset may list pairs of its person ids whose relation is unknown ({"pairs": [[pid, pid], ...]}): labels made
# without annotation (reid.adapt's pseudo-identities) where nothing proves two labels are two people. Training
# never uses such a pair as negatives, so it does not learn to tell one person's two labels apart.
UNKNOWN_PAIRS = "unknown_pairs.json"


def carve_validation(samples: list[Sample], num_ids: int, seed: int) -> tuple[list[Sample], Split, Split]:
    """Hold ``num_ids`` identities out of a training split as a query/gallery pair.

    Recipes are chosen on this pair so that the test split is read once per finished model. Only identities seen
    by two or more cameras are eligible (the protocol removes same-camera matches, so others could never be
    found). Each held-out identity gives one random query image per camera; its other images form the gallery.
    """
    by_pid: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_pid[s.pid].append(s)
    eligible = sorted(pid for pid, ss in by_pid.items() if len({s.camid for s in ss}) > 1)
    if num_ids > len(eligible):
        raise DatasetError(f"cannot hold out {num_ids} validation identities: only {len(eligible)} are seen "
                           "by two or more cameras")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(eligible, num_ids, replace=False).tolist())
    query, gallery = [], []
    for pid in sorted(held):
        by_cam: dict[int, list[Sample]] = defaultdict(list)
        for s in by_pid[pid]:
            by_cam[s.camid].append(s)
        for cam in sorted(by_cam):
            pick = int(rng.integers(len(by_cam[cam])))
            query.append(by_cam[cam][pick])
            gallery += [s for i, s in enumerate(by_cam[cam]) if i != pick]
    kept = [s for s in samples if s.pid not in held]
    return kept, _labelled(query, False), _labelled(gallery, False)


def load_train_set(roots: Sequence[str | Path], val_ids: int = 0, seed: int = 0) -> TrainSet:
    """The training split of each dataset in ``roots``, joined with labels and cameras kept apart.

    With ``val_ids`` > 0, that many identities of each dataset are held out as its validation pair.
    """
    if not roots:
        raise DatasetError("no training dataset given")
    names = [Path(r).name for r in roots]
    if len(set(names)) != len(names):
        raise DatasetError(f"training datasets need distinct folder names, got {names}")
    samples: list[Sample] = []
    group_of: list[int] = []
    val: dict[str, tuple[Split, Split]] = {}
    unknown: list[tuple[int, int]] = []
    for index, root in enumerate(roots):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder is missing")
        own = read_split(root / "bounding_box_train", keep_distractors=False)
        own = [Sample(s.path, s.pid, s.camid + CAMERA_OFFSET * index) for s in own]
        if val_ids > 0:
            own, query, gallery = carve_validation(own, val_ids, seed + index)
            val[names[index]] = (query, gallery)
        # Offset person ids so that two datasets' person 1 stay two people; labels are made contiguous below.
        offset = (index + 1) * 1_000_000
        samples += [Sample(s.path, s.pid + offset, s.camid) for s in own]
        group_of += [index] * len({s.pid for s in own})
        unknown += [(a + offset, b + offset) for a, b in read_unknown_pairs(root)]
    train = _labelled(samples, True)
    index_of = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    pairs = [(index_of[a], index_of[b]) for a, b in unknown if a in index_of and b in index_of]
    return TrainSet(names, train, np.array(group_of, dtype=np.int64), val,
                    np.array(pairs, dtype=np.int64).reshape(-1, 2))


def read_unknown_pairs(root: Path) -> list[tuple[int, int]]:
    """The dataset's :data:`UNKNOWN_PAIRS` (none when the file is absent)."""
    path = root / UNKNOWN_PAIRS
    if not path.is_file():
        return []
    try:
        pairs = json.loads(path.read_text())["pairs"]
        return [(int(a), int(b)) for a, b in pairs]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: expected {{\"pairs\": [[pid, pid], ...]}} ({e})") from e


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) image; an unreadable file raises :class:`DatasetError` naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from e
    except Exception as e:  # ultralytics, once imported, reroutes PIL's failures through optional plugins
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def load_images(samples: Sequence[Sample], num_threads: int = 4) -> torch.Tensor:
    """Decode and resize ``samples`` to the network input: uint8 (N, 3, 160, 64)."""

    def one(s: Sample) -> np.ndarray:
        return resize_rgb(load_image(s.path))

    with ThreadPoolExecutor(num_threads) as pool:
        arrays = list(pool.map(one, samples))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class IdentitySampler(Sampler[list[int]]):
    """Identity-balanced batches: P identities x K images each (the "PK" batches a triplet loss needs).

    An identity with fewer than K images is sampled with replacement. One epoch is ``len(labels) //
    batch_size`` batches, so epochs are comparable with plain random batching. With ``groups`` (the dataset of
    each label), every batch takes the same number of identities from each dataset, so a dataset with more
    images or more people does not drown a smaller one.
    """

    def __init__(
        self, labels: np.ndarray, batch_size: int, num_instances: int, seed: int = 0,
        groups: np.ndarray | None = None,
    ) -> None:
        if batch_size % num_instances:
            raise ValueError(f"batch_size {batch_size} must be a multiple of num_instances {num_instances}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            self.by_pid[int(label)].append(i)
        pids = sorted(self.by_pid)
        group_of = np.zeros(max(pids) + 1, dtype=np.int64) if groups is None else np.asarray(groups)
        self.groups = [[p for p in pids if group_of[p] == g] for g in sorted(set(group_of[pids].tolist()))]
        self.p = batch_size // num_instances
        self.k = num_instances
        if self.p % len(self.groups):
            raise ValueError(f"{self.p} identities per batch cannot be split evenly over {len(self.groups)} datasets")
        self.p_group = self.p // len(self.groups)
        for members in self.groups:
            if len(members) < self.p_group:
                raise ValueError(f"{len(members)} identities cannot fill {self.p_group} identities per batch")
        self.num_batches = len(labels) // batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        orders: list[list[int]] = [[] for _ in self.groups]
        for _ in range(self.num_batches):
            batch_pids: list[int] = []
            for g, members in enumerate(self.groups):
                if len(orders[g]) < self.p_group:
                    orders[g] += list(self.rng.permutation(members))
                batch_pids += orders[g][: self.p_group]
                orders[g] = orders[g][self.p_group :]
            batch = []
            for pid in batch_pids:
                idx = self.by_pid[pid]
                batch += list(self.rng.choice(idx, self.k, replace=len(idx) < self.k))
            yield [int(i) for i in batch]


class RandomBatchSampler(Sampler[list[int]]):
    """Plain shuffled batches (the paper's recipe), last incomplete batch dropped."""

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = self.rng.permutation(self.n)
        for i in range(len(self)):
            yield perm[i * self.batch_size : (i + 1) * self.batch_size].tolist()
