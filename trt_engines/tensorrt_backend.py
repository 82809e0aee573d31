"""TensorRT engines for HA-CNN: build from ONNX (TensorRT 10.x Python API) and run with preallocated device
buffers.

Only importable where ``tensorrt`` is installed; the rest of the project reaches it lazily through
``trt_engines.embedder.build_embedder``. Engines are cached under ``trt_engines/cache`` with a JSON sidecar
(TensorRT version, GPU, ONNX hash, precision, batch profile); a change in any of them triggers a rebuild,
since a serialized engine only runs on the TensorRT version and GPU that built it (the rule of
:mod:`trt_engines.cache`, shared with the YOLO engines).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from reid.model_spec import INPUT_SHAPE
from trt_engines.cache import cache_dir, file_hash, reuse_or_build, sidecar_path, write_sidecar
from trt_engines.embedder import Embedder
from trt_engines.export import INPUT_NAME

log = logging.getLogger(__name__)

_LOGGER = trt.Logger(trt.Logger.WARNING)


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


def engine_metadata(onnx_path: Path, precision: str, max_batch: int, opt_batch: int) -> dict:
    return {
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "onnx_sha256_16": file_hash(onnx_path),
        "precision": precision,
        "min_batch": 1,
        "opt_batch": opt_batch,
        "max_batch": max_batch,
        "input": [INPUT_NAME, [-1, *INPUT_SHAPE], "float32"],
    }


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    precision: str = "fp16",
    max_batch: int = 64,
    opt_batch: int | None = None,
    workspace_gib: float = 2.0,
    timing_cache: str | Path | None = None,
) -> Path:
    """Build and serialize an engine with its sidecar (which :class:`TensorRTEmbedder` reads); returns its path.
    INT8 needs a Q/DQ model (explicit quantisation: TensorRT places int8 kernels where the Q/DQ nodes say; no
    calibrator)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    opt_batch = opt_batch or min(32, max_batch)
    _serialize(onnx_path, engine_path, precision, max_batch, opt_batch, workspace_gib, timing_cache)
    write_sidecar(engine_path, engine_metadata(onnx_path, precision, max_batch, opt_batch))
    return engine_path


def _serialize(onnx_path: Path, engine_path: Path, precision: str, max_batch: int, opt_batch: int,
               workspace_gib: float = 2.0, timing_cache: str | Path | None = None) -> None:
    """Parse ``onnx_path``, build the engine and write it to ``engine_path`` (no sidecar)."""
    builder = trt.Builder(_LOGGER)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, _LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT could not parse the model: {errors}")
    for i in range(network.num_inputs):
        t = network.get_input(i)
        log.info("input  %s %s %s", t.name, tuple(t.shape), t.dtype)
    for i in range(network.num_outputs):
        t = network.get_output(i)
        log.info("output %s %s %s", t.name, tuple(t.shape), t.dtype)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *INPUT_SHAPE), (opt_batch, *INPUT_SHAPE), (max_batch, *INPUT_SHAPE))
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else cache_dir() / "timing.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see its log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built %s (%s, batch 1..%d, %.1f MB) in %.0f s", engine_path, precision, max_batch,
             engine_path.stat().st_size / 1e6, time.perf_counter() - t0)


def cached_engine(onnx_path: str | Path, precision: str, max_batch: int, opt_batch: int | None = None) -> Path:
    """The engine for this ONNX model, precision and batch profile on this GPU and TensorRT, built if the
    cache holds none or a stale one."""
    onnx_path = Path(onnx_path)
    opt_batch = opt_batch or min(32, max_batch)
    meta = engine_metadata(onnx_path, precision, max_batch, opt_batch)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", meta["gpu"]).strip("-")
    path = cache_dir() / f"hacnn-{meta['onnx_sha256_16']}-{precision}-b{max_batch}-trt{trt.__version__}-{gpu}.engine"
    return reuse_or_build(path, meta, lambda p: _serialize(onnx_path, p, precision, max_batch, opt_batch))


class TensorRTEmbedder(Embedder):
    """Runs a serialized engine. Input and output device buffers are allocated once for ``max_batch``; each
    call copies the batch in, sets the input shape and enqueues on one CUDA stream."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, max_batch: int | None = None) -> None:
        engine_path = Path(engine_path)
        meta = json.loads(sidecar_path(engine_path).read_text())  # precision and batch profile
        super().__init__(meta["precision"], max_batch or meta["max_batch"])
        if self.max_batch > meta["max_batch"]:
            raise ValueError(f"max_batch {self.max_batch} exceeds the engine profile's {meta['max_batch']}")
        self.runtime = trt.Runtime(_LOGGER)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{engine_path}: could not deserialize (built by another TensorRT or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        out_dim = self.engine.get_tensor_shape(self.output_name)[-1]
        self.d_in = torch.empty((self.max_batch, *INPUT_SHAPE), dtype=torch.float32, device="cuda")
        self.d_out = torch.empty((self.max_batch, out_dim), dtype=torch.float32, device="cuda")
        self.h_in = torch.empty_like(self.d_in, device="cpu").pin_memory()
        self.h_out = torch.empty_like(self.d_out, device="cpu").pin_memory()
        self.context.set_tensor_address(self.input_name, self.d_in.data_ptr())
        self.context.set_tensor_address(self.output_name, self.d_out.data_ptr())

    def infer(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        with torch.cuda.stream(self.stream):
            self.h_in[:n].numpy()[...] = batch
            self.d_in[:n].copy_(self.h_in[:n], non_blocking=True)
            self.context.set_input_shape(self.input_name, (n, *INPUT_SHAPE))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.h_out[:n].copy_(self.d_out[:n], non_blocking=True)
        self.stream.synchronize()
        return self.h_out[:n].numpy().copy()
