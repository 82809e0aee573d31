"""One prepared GPU session: train HA-CNN from scratch on a carried pack within a time budget, then measure the
GPU embedder against the CPU path, everything written to ``$OUT`` in one device call.

    python -m reid.pack --data ../shared/datasets/market1501 --val-ids 50 --out packs/      # here, once
    # on the device machine, in one call (carry packs/):
    python benchmarks/gpu_session.py --pack packs/market1501.npz --budget-s 420 --out "$OUT"
    # here, no GPU: the same steps on the CPU on a few hundred images (a test in the suite)
    python benchmarks/gpu_session.py --smoke --out /tmp/gpu-smoke

Steps:
1. ``reid.train`` on the pack: the whole epoch's images decoded once into GPU memory, augmentation on the GPU,
   bfloat16 autocast, channels-last, ``torch.compile``, SGD with the linear scaling rule (the paper's lr 0.03 at
   batch 32, scaled to the batch) after a warm-up, a cosine schedule fitted to ``--budget-s`` from the measured
   epoch time, checkpoints every epoch and weights at every evaluation (a run cut short still returns usable
   weights). Its log prints images/s and the share of step time in data, forward and backward.
2. The embedder: crops/s at batch 1, 32 and 256 for torch CUDA fp16, ONNX Runtime's CUDA provider when it loads,
   and the CPU path (ONNX Runtime fp32, the pipeline's CPU default), measured in this run; cosine of each against
   the float32 CPU embedding of the same crops.
3. ``$OUT``: ``model.pt`` (float16, with its card), ``learning_curve.png``, ``history.json``, ``session.json``
   (every figure) and ``session.log``; at most 8 files, as the device tool brings back.

Back here, ``python -m reid.evaluate --weights OUT/model.pt`` scores the full Market-1501 and cuhk03_p1 test
splits on the CPU (the test images never travel).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid.log import setup_logging  # noqa: E402
from reid.paths import PROJECT_ROOT, shared_root  # noqa: E402

log = logging.getLogger("gpu_session")

GPU_RECIPE = ["--optim", "sgd", "--lr", "0.03", "--lr-ref-batch", "32", "--batch-size", "256", "--epochs", "300",
              "--warmup-epochs", "5", "--schedule", "cosine", "--label-smoothing", "0.1", "--pad", "10",
              "--erase-p", "0.5", "--amp", "--channels-last", "--compile", "--eval-every", "25"]
SMOKE_RECIPE = ["--optim", "sgd", "--lr", "0.03", "--lr-ref-batch", "32", "--batch-size", "16", "--epochs", "1",
                "--warmup-epochs", "0.5", "--schedule", "cosine", "--pad", "10", "--erase-p", "0.5",
                "--channels-last", "--eval-every", "1", "--device", "cpu"]


def train(pack: Path, out: Path, budget_s: float, smoke: bool) -> Path:
    from reid.train import main as train_main

    args = ["--pack", str(pack), "--out", str(out), "--time-budget-s", str(budget_s),
            *(SMOKE_RECIPE if smoke else GPU_RECIPE)]
    log.info("python -m reid.train %s", " ".join(args))
    if train_main(args) != 0:
        raise SystemExit("training failed")
    return out / "model.pt"


def embed_rate(embedder, x: np.ndarray, batch: int, seconds: float) -> float:
    """Crops per second at ``batch`` (warm-up first, then repeated for about ``seconds``)."""
    chunk = x[:batch]
    embedder.infer(chunk)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        embedder.infer(chunk)
        n += len(chunk)
    return n / (time.perf_counter() - t0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def embedders(weights: Path, max_batch: int, cuda: bool) -> dict[str, object]:
    from trt_engines.embedder import BackendUnavailableError, build_embedder

    out: dict[str, object] = {"cpu onnxruntime fp32": build_embedder("onnxruntime", "fp32", weights, device="cpu",
                                                                    max_batch=max_batch)}
    if cuda:
        out["cuda torch fp16"] = build_embedder("torch", "fp16", weights, device="cuda", max_batch=max_batch)
        try:
            ort = build_embedder("onnxruntime", "fp32", weights, device="cuda", max_batch=max_batch)
            if "CUDAExecutionProvider" in ort.session.get_providers():  # type: ignore[attr-defined]
                out["cuda onnxruntime fp32"] = ort
            else:
                log.warning("onnxruntime has no CUDA provider here: its row is left out")
        except (BackendUnavailableError, RuntimeError) as e:
            log.warning("onnxruntime on CUDA did not load: %s", e)
    return out


def measure_embedders(weights: Path, pack: Path, smoke: bool) -> list[dict]:
    """The embedder rows: crops/s per batch size and the worst cosine against the CPU float32 embedding."""
    from reid.pack import TRAIN, load_pack
    from reid.transforms import to_float
    from trt_engines.torch_backend import TorchEmbedder

    batches = (1, 8, 32) if smoke else (1, 32, 256)
    seconds = 0.5 if smoke else 3.0
    p = load_pack(pack)
    x = to_float(p.images(p.rows(TRAIN)[: max(batches)])).numpy()
    reference = TorchEmbedder(weights, "cpu", "fp32", max(batches)).infer(x)
    rows = []
    for name, emb in embedders(weights, max(batches), torch.cuda.is_available() and not smoke).items():
        row = {"embedder": name, "cosine_min": cosine(emb.infer(x), reference)}  # type: ignore[attr-defined]
        for b in batches:
            row[f"crops_per_s_b{b}"] = round(embed_rate(emb, x, b, seconds), 1)
        rows.append(row)
        log.info("%s", row)
    return rows


def smoke_pack(folder: Path) -> Path:
    """A pack of a few hundred Market-1501 images (20 training identities, 5 validation ones)."""
    from reid.pack import write_pack

    return write_pack([shared_root() / "datasets" / "market1501"], folder, val_ids=5, num_ids=20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_session.py", description=__doc__.split("\n")[0])
    p.add_argument("--pack", type=Path, default=PROJECT_ROOT / "packs" / "market1501.npz")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_session")))
    p.add_argument("--budget-s", type=float, default=420.0, help="seconds of training (the rest: set-up, embedders)")
    p.add_argument("--smoke", action="store_true", help="the same steps on the CPU on a few hundred images")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging()
    logging.getLogger().addHandler(logging.FileHandler(args.out / "session.log"))
    t0 = time.perf_counter()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "cpu"
    with tempfile.TemporaryDirectory(prefix="gpu_session_") as tmp:
        pack = smoke_pack(Path(tmp) / "pack") if args.smoke else args.pack
        run = Path(tmp) / "train"
        weights = train(pack, run, 60.0 if args.smoke else args.budget_s, args.smoke)
        rows = measure_embedders(weights, pack, args.smoke)
        for name in ("model.pt", "learning_curve.png", "history.json"):
            if (run / name).is_file():
                shutil.copy2(run / name, args.out / name)
    history = json.loads((args.out / "history.json").read_text())
    summary = {"device": device, "torch": torch.__version__, "smoke": args.smoke,
               "wall_s": round(time.perf_counter() - t0, 1), "epochs": len(history), "last_epoch": history[-1],
               "embedders": rows}
    (args.out / "session.json").write_text(json.dumps(summary, indent=1))
    print(f"GPU session on {device}: {len(history)} epochs, {history[-1].get('images_per_s')} images/s in the last, "
          f"validation mAP {history[-1].get('mAP')}, rank-1 {history[-1].get('rank1')}; {summary['wall_s']} s in all")
    cols = [k for k in rows[0] if k.startswith("crops_per_s")]
    print(f"{'embedder':<24}" + "".join(f"{c.removeprefix('crops_per_s_'):>10}" for c in cols) + f"{'cos min':>9}")
    for r in rows:
        print(f"{r['embedder']:<24}" + "".join(f"{r[c]:>10.0f}" for c in cols) + f"{r['cosine_min']:>9.4f}")
    print("crops/s at each batch size (b1, ...), measured in this run; cos min: worst cosine against the float32 "
          "CPU embedding of the same crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
