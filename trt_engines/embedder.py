"""One interface for every inference backend: BGR crops in, float32 (N, 1024) embeddings out.

Backends differ only in how they run the network on a preprocessed float32 (N, 3, 160, 64) batch; the
preprocessing (``reid.transforms.preprocess_bgr``), the splitting of oversized batches and the input checks
live here, once, so every backend gives the same numbers for the same crops.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reid.model_spec import EMBEDDING_DIM, INPUT_SHAPE
from reid.transforms import preprocess_bgr

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "torch")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


class BackendUnavailableError(RuntimeError):
    """The requested backend or precision cannot run on this machine; the message says why."""


class Embedder(ABC):
    """Embeds person crops. Subclasses implement :meth:`infer` on one batch of at most ``max_batch``."""

    name: str = "?"

    def __init__(self, precision: str, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.precision = precision
        self.max_batch = max_batch

    @property
    def description(self) -> str:
        return f"{self.name} {self.precision} (max batch {self.max_batch})"

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (n, 3, 160, 64) RGB in [0, 1], n <= max_batch -> float32 (n, D)."""

    def embed_preprocessed(self, x: np.ndarray) -> np.ndarray:
        """Embed an already preprocessed batch of any size, split into chunks of ``max_batch``."""
        if x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected a (N, {', '.join(map(str, INPUT_SHAPE))}) batch, got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts = [self.infer(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops of any size -> float32 (N, 1024). An empty or malformed crop raises
        ``reid.transforms.EmptyCropError`` naming its index."""
        return self.embed_preprocessed(preprocess_bgr(crops))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _tensorrt_available() -> str | None:
    """None when TensorRT can run here, else the reason it cannot."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed (pip install '.[tensorrt]' on a CUDA machine)"
    if not _cuda_available():
        return "no CUDA GPU is visible"
    return None


def _check_int8(path: Path, weights: Path) -> None:
    """An int8 model stands for the weights it was quantised from: refuse one made from other weights."""
    if path.is_file():
        from trt_engines.quantize import check_int8

        check_int8(path, weights)


def build_embedder(
    backend: str = "auto",
    precision: str = "fp32",
    weights: str | Path | None = None,
    device: str = "auto",
    max_batch: int = 64,
    onnx_path: str | Path | None = None,
    int8_onnx_path: str | Path | None = None,
) -> Embedder:
    """Make the embedder for ``backend``/``precision``.

    ``auto`` picks the fastest backend available: TensorRT on a CUDA machine with TensorRT, else PyTorch on
    CUDA, else ONNX Runtime on the CPU (about 2x PyTorch eager there; see benchmarks/embed_throughput.py).
    ONNX models are exported from ``weights`` into the cache on first use unless ``onnx_path`` is given.
    """
    from trt_engines.cache import cached_onnx

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    from reid.paths import DEFAULT_WEIGHTS

    weights = Path(weights) if weights else DEFAULT_WEIGHTS
    cuda = _cuda_available() and device != "cpu"
    if backend == "auto":
        if cuda and _tensorrt_available() is None:
            backend = "tensorrt"
        elif cuda:
            backend = "torch"
        else:
            backend = "onnxruntime"
        log.info("backend auto -> %s", backend)

    if backend == "torch":
        from trt_engines.torch_backend import TorchEmbedder

        dev = ("cuda" if cuda else "cpu") if device == "auto" else device
        return TorchEmbedder(weights, dev, precision, max_batch)
    if backend == "onnxruntime":
        from trt_engines.ort_backend import OnnxRuntimeEmbedder

        if precision == "int8":
            if int8_onnx_path is None:
                raise BackendUnavailableError(
                    "int8 with onnxruntime needs a quantised model: make one with "
                    "`python -m trt_engines.quantize --calib DIR --out model.int8.onnx` and pass it as int8_onnx"
                )
            path = Path(int8_onnx_path)
            _check_int8(path, weights)
        else:
            path = Path(onnx_path) if onnx_path else cached_onnx(weights)
        return OnnxRuntimeEmbedder(path, precision, max_batch, use_gpu=cuda)
    reason = _tensorrt_available()
    if reason:
        raise BackendUnavailableError(f"tensorrt backend unavailable: {reason}")
    from trt_engines.tensorrt_backend import TensorRTEmbedder, cached_engine

    src = Path(int8_onnx_path) if precision == "int8" and int8_onnx_path else (
        Path(onnx_path) if onnx_path else cached_onnx(weights))
    if precision == "int8" and not int8_onnx_path:
        raise BackendUnavailableError("int8 TensorRT engines are built from the Q/DQ model of trt_engines.quantize")
    if precision == "int8":
        _check_int8(src, weights)
    return TensorRTEmbedder(cached_engine(src, precision, max_batch), max_batch)
