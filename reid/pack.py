"""Training images packed for a GPU session: resized to the model's input, JPEG-encoded, in one file.

    python -m reid.pack --data ../shared/datasets/market1501 [--data ../shared/datasets/cuhk03_p1] --out packs/
        [--val-ids 50] [--quality 90] [--max-mib 48]

Why: a lent GPU machine receives only the working tree, 64 MiB at most with the code, and ``../shared`` stays
behind. Market-1501's 12,936 training crops at 160x64 are 397 MB as raw pixels but 43 MiB as JPEG at quality 90
(measured), so the pack carries JPEG bytes; the trainer decodes them once, on the GPU where there is one
(``torchvision.io.decode_jpeg``), into a uint8 tensor that stays resident for the whole run.

The pack (``<datasets>.npz``, uncompressed: the JPEGs are already compressed) holds every image's bytes and its
part (train, or a dataset's validation query or gallery, carved out of the training identities with
``--val-ids`` exactly as ``reid.train --val-ids`` does), dataset, person, camera and training label; a JSON card
beside it says what went in and its SHA-256. The test splits never go in: they stay here for ``reid.evaluate``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from reid.data import UNKNOWN_PAIRS, DatasetError, Sample, Split, TrainSet, load_image, load_train_set
from reid.log import setup_logging
from reid.model_spec import INPUT_HEIGHT, INPUT_WIDTH
from reid.transforms import resize_rgb

log = logging.getLogger("reid.pack")

PACK_FORMAT = "reid-pack/1"
TRAIN, QUERY, GALLERY = 0, 1, 2  # the parts of a pack


class PackError(ValueError):
    """A pack that cannot be written or read; the message says which file and why."""


@dataclass
class Pack:
    """A loaded pack: per image its JPEG bytes (``jpegs[offsets[i]:offsets[i + 1]]``) and its row."""

    path: Path
    names: list[str]
    jpegs: np.ndarray  # uint8, all images' bytes end to end
    offsets: np.ndarray  # int64 (N + 1,)
    part: np.ndarray  # int8 (N,): TRAIN, QUERY or GALLERY
    dataset: np.ndarray  # int16 (N,): index into names
    pid: np.ndarray  # int64 (N,)
    camid: np.ndarray  # int64 (N,)
    label: np.ndarray  # int64 (N,): training label (-1 outside the training part)
    groups: np.ndarray  # int64: the dataset of each training label

    def __len__(self) -> int:
        return len(self.part)

    def _split(self, rows: np.ndarray, labels: bool) -> Split:
        samples = [Sample(Path(f"{self.path.name}#{i}"), int(self.pid[i]), int(self.camid[i])) for i in rows]
        return Split(samples, self.label[rows].copy() if labels else np.zeros(len(rows), np.int64))

    def train_set(self) -> TrainSet:
        """The packed training data as ``reid.data.load_train_set`` gives it (rows in pack order)."""
        train = self._split(self.rows(TRAIN), labels=True)
        val = {}
        for d, name in enumerate(self.names):
            q, g = self.rows(QUERY, d), self.rows(GALLERY, d)
            if len(q):
                val[name] = (self._split(q, False), self._split(g, False))
        return TrainSet(list(self.names), train, self.groups, val)

    def rows(self, part: int, dataset: int | None = None) -> np.ndarray:
        keep = self.part == part
        if dataset is not None:
            keep &= self.dataset == dataset
        return np.flatnonzero(keep)

    def images(self, rows: np.ndarray, device: torch.device | str = "cpu", chunk: int = 4096) -> torch.Tensor:
        """Decode ``rows`` into uint8 RGB (N, 3, 160, 64) on ``device`` (nvJPEG on a GPU, OpenCV on the CPU)."""
        device = torch.device(device)
        out = []
        for start in range(0, len(rows), chunk):
            blobs = [self.jpegs[self.offsets[i]: self.offsets[i + 1]] for i in rows[start:start + chunk]]
            if device.type == "cuda":  # nvJPEG, batched: the images land in GPU memory
                from torchvision.io import decode_jpeg

                out.append(torch.stack(decode_jpeg([torch.from_numpy(b) for b in blobs], device=device)))
            else:
                rgb = np.stack([cv2.imdecode(b, cv2.IMREAD_COLOR)[:, :, ::-1] for b in blobs])
                out.append(torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous())
        if not out:
            return torch.zeros((0, 3, INPUT_HEIGHT, INPUT_WIDTH), dtype=torch.uint8, device=device)
        images = torch.cat(out)
        if images.shape[1:] != (3, INPUT_HEIGHT, INPUT_WIDTH):
            raise PackError(f"{self.path}: images are {tuple(images.shape[1:])}, the model takes "
                            f"(3, {INPUT_HEIGHT}, {INPUT_WIDTH})")
        return images


def _encode(sample: Sample, quality: int) -> bytes:
    rgb = resize_rgb(load_image(sample.path))
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DatasetError(f"{sample.path}: cannot encode as JPEG")
    return buf.tobytes()


def write_pack(roots: list[Path], out_dir: Path, val_ids: int = 0, quality: int = 90, seed: int = 1,
               max_mib: float = 48.0, num_ids: int | None = None) -> Path:
    """Pack the training splits of ``roots`` (and their validation identities); returns the pack's path.
    ``num_ids``: only each dataset's first N training identities (smoke runs)."""
    data = load_train_set(roots, val_ids, seed=seed)
    if len(data.unknown):
        raise PackError(f"{', '.join(map(str, roots))}: a dataset lists pairs of labels that may be one person "
                        f"({UNKNOWN_PAIRS}, pseudo-identities); a pack does not carry them: train on the folder")
    if num_ids:  # labels are contiguous per dataset, dataset 0 first: keep each dataset's first num_ids
        first = {int(g): int(np.flatnonzero(data.groups == g)[0]) for g in np.unique(data.groups)}
        keep_label = np.array([lab - first[int(g)] < num_ids for lab, g in enumerate(data.groups)])
        kept = sorted({int(lab) for lab in np.flatnonzero(keep_label)})
        relabel = {old: new for new, old in enumerate(kept)}
        pairs = [(s, relabel[int(lab)]) for s, lab in zip(data.train.samples, data.train.labels, strict=True)
                 if keep_label[lab]]
        data = TrainSet(data.names, Split([s for s, _ in pairs], np.array([lab for _, lab in pairs])),
                        data.groups[kept], data.val)
    rows: list[tuple[int, int, Sample, int]] = [(TRAIN, 0, s, int(label))
                                                for s, label in zip(data.train.samples, data.train.labels,
                                                                    strict=True)]
    names = list(data.names)
    for name, (q, g) in data.val.items():
        d = names.index(name)
        rows += [(QUERY, d, s, -1) for s in q.samples] + [(GALLERY, d, s, -1) for s in g.samples]
    # Which dataset each training row came from: its person id carries the dataset's offset (reid.data).
    dataset_of_label = data.groups
    with ThreadPoolExecutor(4) as pool:
        blobs = list(tqdm(pool.map(lambda r: _encode(r[2], quality), rows), total=len(rows), desc="pack",
                          unit="img", mininterval=2, file=sys.stderr))
    sizes = np.array([len(b) for b in blobs], dtype=np.int64)
    total_mib = sizes.sum() / 2**20
    if total_mib > max_mib:
        raise PackError(f"{len(rows)} images take {total_mib:.1f} MiB at quality {quality}, over --max-mib "
                        f"{max_mib:g} (the GPU machine takes 64 MiB with the code): lower --quality or pack fewer "
                        "datasets")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{'+'.join(names)}.npz"
    part = np.array([r[0] for r in rows], dtype=np.int8)
    label = np.array([r[3] for r in rows], dtype=np.int64)
    dataset = np.array([dataset_of_label[r[3]] if r[0] == TRAIN else r[1] for r in rows], dtype=np.int16)
    np.savez(path, jpegs=np.frombuffer(b"".join(blobs), dtype=np.uint8),
             offsets=np.concatenate([[0], np.cumsum(sizes)]), part=part, dataset=dataset,
             pid=np.array([r[2].pid for r in rows], dtype=np.int64),
             camid=np.array([r[2].camid for r in rows], dtype=np.int64), label=label,
             groups=np.asarray(data.groups, dtype=np.int64), names=np.array(names),
             format=np.array(PACK_FORMAT))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    card = {"format": PACK_FORMAT, "datasets": [str(r) for r in roots], "names": names, "quality": quality,
            "image_size": [INPUT_HEIGHT, INPUT_WIDTH], "val_ids": val_ids, "seed": seed,
            "train_images": int((part == TRAIN).sum()), "train_ids": int(label.max()) + 1,
            "val_images": int((part != TRAIN).sum()), "mib": round(path.stat().st_size / 2**20, 2),
            "sha256": digest}
    path.with_suffix(".json").write_text(json.dumps(card, indent=1))
    log.info("wrote %s: %d images (%d training, %d ids), %.1f MiB", path, len(rows), card["train_images"],
             card["train_ids"], card["mib"])
    return path


def load_pack(path: str | Path) -> Pack:
    path = Path(path)
    if not path.is_file():
        raise PackError(f"{path}: pack file is missing (python -m reid.pack writes one)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != PACK_FORMAT:
                raise PackError(f"{path}: format {z['format']}, expected {PACK_FORMAT}")
            return Pack(path, [str(n) for n in z["names"]], z["jpegs"], z["offsets"], z["part"], z["dataset"],
                        z["pid"], z["camid"], z["label"], z["groups"])
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, PackError):
            raise
        raise PackError(f"{path}: not a readable pack ({e})") from e


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.pack", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, action="append", required=True, help="Market-layout dataset (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="folder of the pack (git-ignored packs/ by default)")
    p.add_argument("--val-ids", type=int, default=0, help="hold out N identities per dataset as validation")
    p.add_argument("--quality", type=int, default=90, choices=range(50, 101), metavar="50..100")
    p.add_argument("--max-mib", type=float, default=48.0, help="refuse a pack larger than this")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-ids", type=int, default=None, help="only each dataset's first N training identities (smoke)")
    args = p.parse_args(argv)
    setup_logging()
    try:
        write_pack(args.data, args.out, args.val_ids, args.quality, args.seed, args.max_mib, args.num_ids)
    except (DatasetError, PackError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
