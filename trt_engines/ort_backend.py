"""ONNX Runtime backend: the CPU default (CPUExecutionProvider), with CUDA/TensorRT execution providers
when onnxruntime-gpu is installed. Runs the float32 export or the Q/DQ int8 model of trt_engines.quantize."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from trt_engines.embedder import BackendUnavailableError, Embedder

log = logging.getLogger(__name__)


class OnnxRuntimeEmbedder(Embedder):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, precision: str = "fp32", max_batch: int = 64,
                 use_gpu: bool = False, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(precision, max_batch)
        if precision == "fp16":
            raise BackendUnavailableError("onnxruntime runs fp32 or int8 here; fp16 is for tensorrt or torch on CUDA")
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found (python -m trt_engines.export --out {path})")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if use_gpu:
            gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            providers = gpu + providers
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.path = path
        log.info("onnxruntime %s on %s", path.name, self.session.get_providers())

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]
