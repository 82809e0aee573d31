"""Embedding throughput of HA-CNN per backend and precision: crops/s at batch 1, 32 and 128.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/embed_throughput.py \
        [--device cpu|cuda] [--int8-onnx model.int8.onnx] [--weights W]

Prints one table: median and p90 latency per batch over repeated runs (warm-up excluded, CUDA synchronised
before each clock read), crops/s, and the ratio to PyTorch eager float32 on the same device, measured in the
same run. Inputs are preprocessed batches, so rows compare the network runtimes alone. Set the two allocator
variables on CPU: glibc returning freed memory to the OS on every large free slows CPU PyTorch a lot here.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid.log import setup_logging  # noqa: E402
from reid.paths import DEFAULT_WEIGHTS  # noqa: E402
from trt_engines.embedder import BackendUnavailableError, Embedder, build_embedder  # noqa: E402


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def time_rows(emb: Embedder, label: str, batches: list[int], repeats: int, cuda: bool) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.random((b, 3, 160, 64), dtype=np.float32)
        for _ in range(2):
            emb.embed_preprocessed(x)
        times = []
        for _ in range(repeats if b < 128 or cuda else max(3, repeats // 2)):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            emb.embed_preprocessed(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append({"backend": label, "batch": b, "median_ms": 1e3 * med,
                     "p90_ms": 1e3 * float(np.percentile(times, 90)), "crops_per_s": b / med})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/embed_throughput.py", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    p.add_argument("--repeats", type=int, default=10, help="timed runs per row (median and p90 over these)")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--int8-onnx", type=Path, default=None, help="Q/DQ model from trt_engines.quantize")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)
    cuda = args.device == "cuda"
    max_batch = max(args.batches)

    variants = [("torch", "fp32"), ("onnxruntime", "fp32")]
    if args.int8_onnx:
        variants.append(("onnxruntime", "int8"))
    if cuda:
        variants += [("torch", "fp16"), ("tensorrt", "fp32"), ("tensorrt", "fp16")]
        if args.int8_onnx:
            variants.append(("tensorrt", "int8"))
    rows, skipped = [], []
    for backend, precision in variants:
        try:
            emb = build_embedder(backend, precision, args.weights, device=args.device, max_batch=max_batch,
                                 int8_onnx_path=args.int8_onnx)
        except BackendUnavailableError as e:
            skipped.append(f"{backend} {precision}: {e}")
            continue
        label = f"{backend} {'eager ' if backend == 'torch' else ''}{precision}"
        if backend == "onnxruntime":
            label += f" ({emb.session.get_providers()[0].replace('ExecutionProvider', '')})"
        rows += time_rows(emb, label, args.batches, args.repeats, cuda)
    base = {r["batch"]: r["crops_per_s"] for r in rows if r["backend"] == "torch eager fp32"}
    for r in rows:
        r["ratio"] = r["crops_per_s"] / base[r["batch"]]
    if args.json:
        print(json.dumps({"device": device_name(args.device), "rows": rows, "skipped": skipped}))
        return 0
    print(f"HA-CNN embedding throughput on {device_name(args.device)} (torch {torch.__version__}); "
          f"ratio = crops/s over torch eager fp32 at the same batch, same run")
    print(f"{'backend':<30}{'batch':>6}{'median ms':>11}{'p90 ms':>9}{'crops/s':>10}{'ratio':>7}")
    for r in rows:
        print(f"{r['backend']:<30}{r['batch']:>6}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}"
              f"{r['crops_per_s']:>10.1f}{r['ratio']:>7.2f}")
    for s in skipped:
        print(f"skipped: {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
