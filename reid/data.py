"""Re-ID datasets in the Market-1501 layout, and the identity-balanced sampler.

Layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` holding ``PPPP_cC...`` images (Market-1501,
DukeMTMC-reID, MSMT17 and the shared CUHK03 copy all use it). Person id -1 is junk (never scored) and id 0 a
distractor (gallery only). Images are decoded once and kept resized at the network's input size, so training
batches are index lookups and augmentation runs batched on the training device.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    batch_size`` batches, so epochs are comparable with plain random batching.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, num_instances: int, seed: int = 0) -> None:
        if batch_size % num_instances:
            raise ValueError(f"batch_size {batch_size} must be a multiple of num_instances {num_instances}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            self.by_pid[int(label)].append(i)
        self.pids = sorted(self.by_pid)
        self.p = batch_size // num_instances
        self.k = num_instances
        if len(self.pids) < self.p:
            raise ValueError(f"{len(self.pids)} identities cannot fill {self.p} identities per batch")
        self.num_batches = len(labels) // batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        order: list[int] = []
        for _ in range(self.num_batches):
            if len(order) < self.p:
                order += list(self.rng.permutation(self.pids))
            batch_pids, order = order[: self.p], order[self.p :]
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
