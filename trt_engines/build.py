"""Build a TensorRT engine for HA-CNN.

    python -m trt_engines.build --onnx model.onnx --precision fp16|int8|fp32 --max-batch N [--opt-batch K]
        [--out model.engine] [--timing-cache FILE]

INT8 takes the Q/DQ model made by ``python -m trt_engines.quantize`` (explicit quantisation; TensorRT 10
deprecates the implicit calibrator API). Without ``--out`` the engine goes to the engine cache, keyed by
ONNX hash, precision, batch profile, TensorRT version and GPU. Needs a CUDA GPU and ``pip install
'.[tensorrt]'``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from reid.log import setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trt_engines.build", description=__doc__.split("\n")[0])
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--opt-batch", type=int, default=None, help="batch size TensorRT tunes for (default min(32, max))")
    p.add_argument("--out", type=Path, default=None, help="engine path (default: the engine cache)")
    p.add_argument("--timing-cache", type=Path, default=None)
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    log = logging.getLogger("trt_engines.build")

    from trt_engines.embedder import _tensorrt_available

    reason = _tensorrt_available()
    if reason:
        log.error("cannot build a TensorRT engine here: %s", reason)
        return 2
    if not args.onnx.is_file():
        log.error("%s: ONNX model not found (python -m trt_engines.export --out %s)", args.onnx, args.onnx)
        return 2
    from trt_engines.tensorrt_backend import EngineBuildError, build_engine, cached_engine

    try:
        if args.out:
            path = build_engine(args.onnx, args.out, args.precision, args.max_batch, args.opt_batch,
                                timing_cache=args.timing_cache)
        else:
            path = cached_engine(args.onnx, args.precision, args.max_batch, args.opt_batch)
    except EngineBuildError as e:
        log.error("%s", e)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
