"""PyTorch backend: the reference every other backend is checked against (CPU fp32, or CUDA fp32/fp16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reid.weights import load_model
from trt_engines.embedder import BackendUnavailableError, Embedder


class TorchEmbedder(Embedder):
    name = "torch"

    def __init__(self, weights: str | Path, device: str = "cpu", precision: str = "fp32", max_batch: int = 64) -> None:
        super().__init__(precision, max_batch)
        self.device = torch.device(device)
        if precision == "int8":
            raise BackendUnavailableError("the torch backend has no int8 path; use onnxruntime or tensorrt")
        if precision == "fp16" and self.device.type != "cuda":
            raise BackendUnavailableError("fp16 with torch needs CUDA; CPU runs fp32")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = load_model(weights, self.device).to(self.dtype)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, self.dtype, non_blocking=True)
        return self.model(x).float().cpu().numpy()
