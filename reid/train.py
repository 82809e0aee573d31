"""Train HA-CNN from scratch on a Market-layout dataset.

    python -m reid.train --data DIR --out DIR --epochs N [--resume] [recipe options]

Cross-entropy on the global and local heads (optional label smoothing and batch-hard triplet on identity-
balanced batches), Adam or SGD with linear warm-up and a step or cosine schedule. A checkpoint is written
after every epoch (``last.pt``); ``--resume`` continues from it exactly (model, optimiser, schedule, samplers,
random state). The final weights (``model.pt``, float16, with a model card) load with
``reid.weights.load_model``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reid.data import (
    DatasetError,
    IdentitySampler,
    RandomBatchSampler,
    TrainSet,
    load_images,
    load_market,
    load_train_set,
)
from reid.evaluate import EvalSet, evaluate_model
from reid.log import setup_logging
from reid.losses import batch_hard_triplet, cross_entropy
from reid.model import HACNN, count_parameters
from reid.pack import GALLERY, QUERY, TRAIN, PackError, load_pack
from reid.paths import default_dataset
from reid.transforms import TrainAugment
from reid.visualize import plot_learning_curve
from reid.weights import WeightsError, read_weights, save_weights

log = logging.getLogger("reid.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reid.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, nargs="+", default=None,
                   help="Market-layout dataset(s); several train one model with their people kept apart "
                        "(default: $REID_SHARED/datasets/cuhk03_p1)")
    p.add_argument("--val-ids", type=int, default=0,
                   help="hold out N identities of each dataset's training split and evaluate on them instead of "
                        "the test split (choose recipes without reading the test split)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, history, final weights")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    p.add_argument("--init", type=Path, default=None,
                   help="start from a weights file (e.g. reid/weights/hacnn_joint.pt) when no checkpoint exists; "
                        "its classifiers are not stored, so they start fresh")
    p.add_argument("--head-only-epochs", type=int, default=0,
                   help="train only the classifiers for the first K epochs (fit fresh heads on an --init model)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optim", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up from lr/10")
    p.add_argument("--schedule", choices=["step", "cosine", "constant"], default="step")
    p.add_argument("--milestones", type=int, nargs="*", default=[40], help="step schedule: epochs where lr x gamma")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--triplet-weight", type=float, default=0.0, help=">0 adds batch-hard triplet on both features")
    p.add_argument("--margin", type=float, default=0.3)
    p.add_argument("--sampler", choices=["random", "identity"], default=None,
                   help="batch sampler (default: identity when --triplet-weight > 0, else random)")
    p.add_argument("--num-instances", type=int, default=4, help="images per identity in identity batches")
    p.add_argument("--flip-p", type=float, default=0.5)
    p.add_argument("--pad", type=int, default=0, help="pad + random crop, pixels (0 = off)")
    p.add_argument("--erase-p", type=float, default=0.0, help="random erasing probability (0 = off)")
    p.add_argument("--num-ids", type=int, default=None, help="train on the first N identities only (smoke runs)")
    p.add_argument("--eval-every", type=int, default=5, help="evaluate every K epochs and at the end (0 = never)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--pack", type=Path, default=None,
                   help="train on a pack of python -m reid.pack (decoded once onto the device) instead of --data; "
                        "its validation identities, if any, are evaluated")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster convolutions "
                   "on GPUs with tensor cores)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays on long GPU runs)")
    p.add_argument("--lr-ref-batch", type=int, default=None,
                   help="linear scaling rule: --lr is the rate for this batch size, scaled by batch/ref")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="fit the run into this many seconds of training: after each epoch the number of epochs is "
                        "cut to what the measured epoch time allows, the schedule follows")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(args: argparse.Namespace, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (warm-up, then the schedule)."""
    epoch = step / steps_per_epoch
    if epoch < args.warmup_epochs:
        return 0.1 + 0.9 * epoch / args.warmup_epochs
    if args.schedule == "cosine":
        span = max(args.epochs - args.warmup_epochs, 1e-9)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min((epoch - args.warmup_epochs) / span, 1.0)))
    if args.schedule == "step":
        return args.gamma ** sum(epoch >= m for m in args.milestones)
    return 1.0


def base_lr(args: argparse.Namespace) -> float:
    """The learning rate of this batch size: ``--lr`` scaled linearly from ``--lr-ref-batch`` (Goyal et al. 2017:
    with warm-up, large batches then reach the small-batch accuracy)."""
    return args.lr * args.batch_size / args.lr_ref_batch if args.lr_ref_batch else args.lr


def make_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    lr = base_lr(args)
    if args.optim == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=True)


def recipe(args: argparse.Namespace) -> dict:
    keys = ["init", "head_only_epochs", "epochs", "batch_size", "optim", "lr", "weight_decay", "warmup_epochs",
            "schedule", "milestones", "gamma", "label_smoothing", "triplet_weight", "margin", "sampler",
            "num_instances", "flip_p", "pad", "erase_p", "num_ids", "val_ids", "seed", "amp", "pack", "channels_last",
            "compile", "lr_ref_batch", "time_budget_s"]
    return {k: str(v) if isinstance(v := getattr(args, k), Path) else v for k in keys}


def build_evalsets(roots: list[Path], data: TrainSet) -> dict[str, EvalSet]:
    """The sets evaluated during training: the validation pairs if any, else each dataset's test split."""
    if data.val:
        return {name: EvalSet(q, g, load_images(q.samples), load_images(g.samples))
                for name, (q, g) in data.val.items()}
    return {Path(r).name: EvalSet.from_dataset(load_market(r)) for r in roots}


PHASE_SAMPLE_EVERY = 20  # steps between two timed steps (a timed step waits for the GPU at each phase)


class PhaseTimer:
    """Shares of a training step's time in data (indexing, augmentation), forward (with the loss) and backward (with
    the optimiser step), from every ``PHASE_SAMPLE_EVERY``-th step: timing a phase on a GPU means waiting for it,
    which would slow every step."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = {}
        self._on = False
        self._t = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self, sample: bool) -> None:
        self._on = sample
        if sample:
            self._t = self._now()

    def mark(self, phase: str) -> None:
        if self._on:
            t = self._now()
            self.totals[phase] = self.totals.get(phase, 0.0) + t - self._t
            self._t = t

    def shares(self) -> dict[str, float]:
        total = sum(self.totals.values())
        return {f"share_{k}": round(v / total, 3) for k, v in self.totals.items()} if total else {}


class Trainer:
    """Owns one training run: data on the device, model, optimiser, schedule, checkpoints."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.sampler is None:
            args.sampler = "identity" if args.triplet_weight > 0 else "random"
        dev = args.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        seed_everything(args.seed)

        pack = load_pack(args.pack) if args.pack else None
        self.data_roots: list[Path] = [Path(n) for n in pack.names] if pack else (args.data or [default_dataset()])
        data = pack.train_set() if pack else load_train_set(self.data_roots, args.val_ids, seed=args.seed)
        if pack is not None and args.val_ids:
            raise PackError(f"{args.pack}: a pack's validation identities are chosen when it is written "
                            "(python -m reid.pack --val-ids N); drop --val-ids here")
        self.held_out = bool(data.val)  # evaluated on identities held out of training, not on a test split
        train = data.train
        if args.num_ids:
            keep = train.labels < args.num_ids
            train.samples = [s for s, k in zip(train.samples, keep, strict=True) if k]
            train.labels = train.labels[keep]
        self.num_classes = int(train.labels.max()) + 1
        log.info("data %s\n%s", ", ".join(map(str, self.data_roots)), data.summary())
        t0 = time.perf_counter()
        if pack is not None:  # rows of the training part, in the pack's order (train.samples follows it)
            rows = pack.rows(TRAIN)
            rows = rows[pack.label[rows] < args.num_ids] if args.num_ids else rows
            self.images = pack.images(rows, self.device)
            self.evalsets = {name: EvalSet(q, g, pack.images(pack.rows(QUERY, d)), pack.images(pack.rows(GALLERY, d)))
                             for d, (name, (q, g)) in enumerate(data.val.items())} if args.eval_every > 0 else {}
        else:
            self.images = load_images(train.samples).to(self.device)
            self.evalsets = build_evalsets(self.data_roots, data) if args.eval_every > 0 else {}
        self.labels = torch.as_tensor(train.labels, device=self.device)
        self.apart = None  # which classes may be trained as two people: all, unless a dataset lists unknown pairs
        if len(data.unknown):
            apart = torch.ones(self.num_classes, self.num_classes, dtype=torch.bool)
            u = torch.as_tensor(data.unknown)
            apart[u[:, 0], u[:, 1]] = apart[u[:, 1], u[:, 0]] = False
            self.apart = apart.fill_diagonal_(False).to(self.device)
            log.info("%d pairs of classes may be one person: never trained as negatives", len(data.unknown))
        log.info("decoded %d training images onto %s in %.1f s", len(self.images), self.device,
                 time.perf_counter() - t0)

        if args.sampler == "identity":
            groups = data.groups[: self.num_classes]
            self.sampler = IdentitySampler(train.labels, args.batch_size, args.num_instances, seed=args.seed,
                                           groups=groups)
        else:
            self.sampler = RandomBatchSampler(len(train.labels), args.batch_size, seed=args.seed)
        self.aug_gen = torch.Generator(device=self.device).manual_seed(args.seed)  # augmentation on the device
        self.augment = TrainAugment(args.flip_p, args.pad, args.erase_p, generator=self.aug_gen)

        self.model = HACNN(self.num_classes).to(self.device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.init_card: dict | None = None  # the card of the --init weights: the new card keeps the lineage
        if args.init:
            self._load_init(args.init)
        self.optimizer = make_optimizer(args, self.model)
        self.step_model = torch.compile(self.model) if args.compile else self.model
        spe = len(self.sampler)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(args, s, spe))
        self.start_epoch = 0
        self.history: list[dict] = []
        args.out.mkdir(parents=True, exist_ok=True)
        log.info("HA-CNN: %.3f M parameters (embedding), %d classes, %d batches/epoch, device %s",
                 count_parameters(self.model) / 1e6, self.num_classes, spe, self.device)

    def _load_init(self, path: Path) -> None:
        payload = read_weights(path)
        if payload["config"]["channels"] != self.model.config["channels"]:
            raise WeightsError(f"{path}: architecture {payload['config']} does not match {self.model.config}")
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier_") for k in missing):
            raise WeightsError(f"{path}: weights do not fit the model")
        self.init_card = payload.get("card") or {}
        log.info("initialised from %s (classifiers fresh)", path)

    # -- checkpoints ----------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.args.out / "last.pt"

    def save_checkpoint(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "recipe": recipe(self.args),
            "budget_epochs": self.args.epochs if self.args.time_budget_s is not None else None,
            "sampler_rng": self.sampler.rng.bit_generator.state,
            "aug_rng": self.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }
        tmp = self.last_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.last_path)

    def load_checkpoint(self) -> None:
        state = torch.load(self.last_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        # RNG states load back as CPU byte tensors (map_location moved them to the device)
        self.aug_gen.set_state(state["aug_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda_rng"]])
        self.start_epoch = state["epoch"] + 1
        if self.args.time_budget_s is not None and state.get("budget_epochs") is not None:
            # The budget is the whole run's: the epochs it planned stand (a run it ended trains no more).
            self.args.epochs = min(self.args.epochs, state["budget_epochs"])
        log.info("resumed from %s at epoch %d", self.last_path, self.start_epoch + 1)

    # -- training -------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        args = self.args
        self.model.train()
        head_only = epoch < args.head_only_epochs
        for name, param in self.model.named_parameters():
            param.requires_grad_(not head_only or name.startswith("classifier_"))
        if head_only:  # frozen backbone: BN uses and keeps its running statistics, as at inference
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        loss_sum = correct = seen = 0.0
        t0 = time.perf_counter()
        bar = tqdm(self.sampler, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, mininterval=2.0,
                   disable=None, file=sys.stderr)
        amp = args.amp and self.device.type == "cuda"
        phases = PhaseTimer(self.device)
        for step, batch in enumerate(bar):
            phases.start(sample=step % PHASE_SAMPLE_EVERY == 1)  # step 0 warms up (cuDNN, compile)
            idx = torch.as_tensor(batch, device=self.device)
            x = self.augment(self.images[idx])
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.labels[idx]
            phases.mark("data")
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                out = self.step_model(x)
            loss = cross_entropy(out.logits_global.float(), y, args.label_smoothing, self.apart)
            loss = loss + cross_entropy(out.logits_local.float(), y, args.label_smoothing, self.apart)
            if args.triplet_weight > 0:
                tri = batch_hard_triplet(out.feat_global, y, args.margin, self.apart)
                tri = tri + batch_hard_triplet(out.feat_local, y, args.margin, self.apart)
                loss = loss + args.triplet_weight * tri
            phases.mark("forward")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            phases.mark("backward")
            n = len(batch)
            loss_sum += loss.detach() * n  # summed on the device: no sync per step
            correct += (out.logits_global.argmax(1) == y).sum()
            seen += n
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{100 * float(correct) / seen:.1f}%")
        wall = time.perf_counter() - t0
        return {"epoch": epoch + 1, "loss": float(loss_sum) / seen, "acc": 100 * float(correct) / seen,
                "lr": self.optimizer.param_groups[0]["lr"], "time_s": wall, "images_per_s": round(seen / wall, 1),
                **phases.shares()}

    def evaluate(self) -> dict:
        """Scores in percent; with several sets, each under ``name/`` and their mean unprefixed."""
        scores = {name: evaluate_model(self.model, ev)[0].as_percent() for name, ev in self.evalsets.items()}
        if len(scores) == 1:
            return {k: round(v, 3) for k, v in next(iter(scores.values())).items()}
        out = {f"{name}/{k}": round(v, 3) for name, s in scores.items() for k, v in s.items()}
        for k in next(iter(scores.values())):
            out[k] = round(float(np.mean([s[k] for s in scores.values()])), 3)
        return out

    def card(self, epoch: int, wall_s: float) -> dict:
        last_eval = next((h for h in reversed(self.history) if "mAP" in h), {})
        return {
            "architecture": "HA-CNN (Li, Zhu, Gong, CVPR 2018)",
            "data": ", ".join(map(str, self.data_roots)),
            "evaluated_on": "validation identities held out of training" if self.held_out else "test split",
            "train_images": len(self.images),
            "train_ids": self.num_classes,
            "epochs": epoch,
            "recipe": recipe(self.args),
            "metrics": {k: v for k, v in last_eval.items() if k.split("/")[-1] in ("rank1", "rank5", "rank10", "mAP")},
            "history": self.history,
            "hardware": f"{platform.processor() or platform.machine()} / "
                        f"{torch.cuda.get_device_name(self.device) if self.device.type == 'cuda' else 'cpu'}",
            "torch": str(torch.__version__),
            "train_wall_s": round(wall_s, 1),
            **({"init_card": self.init_card} if self.init_card is not None else {}),
        }

    def fit_budget(self, done: int, spent_s: float, last_epoch_s: float) -> None:
        """Fit the number of epochs to ``--time-budget-s`` at the latest epoch's time (evaluation included; the
        first epoch's compilation and warm-up are not what the others cost), never above the requested number;
        the cosine schedule follows ``args.epochs`` and step milestones are scaled from the requested ones."""
        args = self.args
        fits = done + int(max(args.time_budget_s - spent_s, 0.0) // max(last_epoch_s, 1e-9))
        new = max(done, min(self.requested_epochs, fits))
        if new != args.epochs:
            args.milestones = [max(1, round(m * new / self.requested_epochs)) for m in self.requested_milestones]
            log.info("time budget %.0f s at %.1f s per epoch: %d epochs (requested %d)", args.time_budget_s,
                     last_epoch_s, new, self.requested_epochs)
            args.epochs = new

    def fit(self) -> Path:
        args = self.args
        self.requested_epochs, self.requested_milestones = args.epochs, list(args.milestones)
        if args.resume and self.last_path.exists():
            self.load_checkpoint()
        t_start = time.perf_counter() - sum(h.get("time_s", 0) for h in self.history)
        epoch = self.start_epoch
        while epoch < args.epochs:
            t_epoch = time.perf_counter()
            stats = self.train_epoch(epoch)
            final = epoch + 1 == args.epochs
            evaluated = bool(self.evalsets) and ((epoch + 1) % args.eval_every == 0 or final)
            if evaluated:
                stats.update(self.evaluate())
            self.history.append(stats)
            if evaluated:
                # The latest evaluated weights, so a run cut short still leaves a usable, documented model.
                wall = time.perf_counter() - t_start
                save_weights(self.model, args.out / "model.pt", self.card(epoch + 1, wall))
            log.info("epoch %d/%d  %s", epoch + 1, args.epochs,
                     "  ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "epoch"))
            epoch += 1
            if args.time_budget_s is not None:
                self.fit_budget(epoch, time.perf_counter() - t_start, time.perf_counter() - t_epoch)
            self.save_checkpoint(epoch - 1)  # after the budget's plan: a resumed run keeps to it
            (args.out / "history.json").write_text(json.dumps(self.history, indent=1))
        if self.evalsets and self.history and "mAP" not in self.history[-1]:  # a budget ended it off the eval grid
            self.history[-1].update(self.evaluate())
            (args.out / "history.json").write_text(json.dumps(self.history, indent=1))
        wall = time.perf_counter() - t_start
        path = save_weights(self.model, args.out / "model.pt", self.card(args.epochs, wall))
        if any("mAP" in h for h in self.history):
            split = "validation identities" if self.held_out else "test split"
            names = " + ".join(d.name for d in self.data_roots)
            plot_learning_curve({"mAP": self.history}, args.out / "learning_curve.png",
                                title=f"HA-CNN on {names} ({split})")
        log.info("wrote %s", path)
        return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.INFO)
    try:
        Trainer(args).fit()
    except (DatasetError, WeightsError, PackError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
