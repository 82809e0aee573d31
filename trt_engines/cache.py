"""Git-ignored cache of derived model files (ONNX exports, TensorRT engines), keyed by content hashes so a
new weights file or a new toolchain never reuses a stale artefact."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "REID_ENGINE_CACHE"


def cache_dir() -> Path:
    """``$REID_ENGINE_CACHE`` or ``trt_engines/cache`` in the project."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env) if env else Path(__file__).resolve().parent / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_hash(path: str | Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def cached_onnx(weights: str | Path) -> Path:
    """The opset-17 ONNX export of ``weights``, exported on first use."""
    from reid.weights import load_model
    from trt_engines.export import export_onnx

    path = cache_dir() / f"hacnn-{file_hash(weights)}.onnx"
    if not path.exists():
        log.info("exporting %s to %s", weights, path)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.onnx")
        export_onnx(load_model(weights), tmp)
        tmp.replace(path)
    return path
