"""ONNX Runtime backend: the CPU default (CPUExecutionProvider), with CUDA/TensorRT execution providers
when onnxruntime-gpu is installed. Runs the float32 export or the Q/DQ int8 model of trt_engines.quantize."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from trt_engines.embedder import BackendUnavailableError, Embedder

log = logging.getLogger(__name__)


def quiet_session_options(threads: int | None = None):  # noqa: ANN201 - an onnxruntime.SessionOptions
    """Session options for a CPU stage that shares few cores with other stage processes.

    ONNX Runtime's worker threads spin between runs by default: on this 2-core machine a detector whose
    workers spin while the embed stage computes took 1.6-1.7 s for 30 frames instead of 0.8-1.2 s, and the
    whole replay's speed varied by half from one run to the next. Idle workers here sleep instead.
    ``threads``: intra-op threads (default: the cores this process may use).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


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
        opts = quiet_session_options(threads)
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
