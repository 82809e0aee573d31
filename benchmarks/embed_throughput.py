"""Embedding throughput of HA-CNN in eval mode: crops/s at batch 1, 32 and 128.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 python benchmarks/embed_throughput.py [--device cpu]

Prints one table: median and p90 latency per batch over repeated runs (warm-up excluded, CUDA synchronised
before each clock read), crops/s, and the ratio to the baseline row (PyTorch eager float32 on the same device)
measured in the same run. Set the two allocator variables on CPU: glibc's default of returning freed memory
to the OS on every large free costs CPU PyTorch a large slowdown here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reid.model import HACNN  # noqa: E402
from reid.paths import DEFAULT_WEIGHTS  # noqa: E402
from reid.weights import load_model  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def torch_runner(model: torch.nn.Module, batch: int, device: torch.device, dtype: torch.dtype):
    x = torch.rand(batch, 3, 160, 64, device=device)
    m = model.to(device)
    if dtype != torch.float32:
        m = m.to(dtype)
        x = x.to(dtype)

    @torch.inference_mode()
    def run():
        return m(x)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/embed_throughput.py", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    p.add_argument("--repeats", type=int, default=10, help="timed runs per row (median and p90 over these)")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    model = load_model(args.weights) if args.weights.is_file() else HACNN(num_classes=1).eval()
    variants = [("torch eager fp32", torch.float32)]
    if device.type == "cuda":
        variants.append(("torch eager fp16", torch.float16))
    rows = []
    for name, dtype in variants:
        for b in args.batches:
            fn = torch_runner(model, b, device, dtype)
            reps = max(3, args.repeats if b < 128 or device.type == "cuda" else args.repeats // 2)
            t = time_fn(fn, device, reps, warmup=2)
            med = statistics.median(t)
            p90 = float(np.percentile(t, 90))
            rows.append({"backend": name, "batch": b, "median_ms": 1e3 * med, "p90_ms": 1e3 * p90,
                         "crops_per_s": b / med})
    base = {r["batch"]: r["crops_per_s"] for r in rows if r["backend"] == "torch eager fp32"}
    for r in rows:
        r["ratio"] = r["crops_per_s"] / base[r["batch"]]
    if args.json:
        print(json.dumps({"device": device_name(device), "rows": rows}))
        return 0
    print(f"HA-CNN embedding throughput on {device_name(device)} (torch {torch.__version__}); "
          f"baseline = torch eager fp32, same run")
    print(f"{'backend':<20}{'batch':>6}{'median ms':>11}{'p90 ms':>9}{'crops/s':>10}{'ratio':>7}")
    for r in rows:
        print(f"{r['backend']:<20}{r['batch']:>6}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}"
              f"{r['crops_per_s']:>10.1f}{r['ratio']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
