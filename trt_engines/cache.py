"""Git-ignored caches of derived model files: ONNX exports, and TensorRT engines with their JSON sidecars.

One rebuild rule for every engine the project builds (HA-CNN through the TensorRT API, YOLO through
ultralytics' exporter): a serialized engine only runs on the TensorRT version and GPU that built it, and only
stands for the exact weights and settings it was built from. So each engine has a JSON sidecar recording that
*fingerprint*, and :func:`reuse_or_build` reuses an engine only when its sidecar records every field of the
current fingerprint with the same value; anything else (no engine, no sidecar, an unreadable one, one field
changed, ``force``) rebuilds. File names carry content hashes, so a new weights file never even looks up a stale
artefact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_ENV = "REID_ENGINE_CACHE"


def ignored_dir(path: str | Path) -> Path:
    """``path``, created if needed, with a ``.gitignore`` that keeps its machine-specific files out of git."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# built models (ONNX exports, TensorRT engines): machine-specific, never committed\n*\n")
    return path


def cache_dir() -> Path:
    """``$REID_ENGINE_CACHE`` or ``trt_engines/cache`` in the project."""
    env = os.environ.get(CACHE_ENV)
    return ignored_dir(Path(env) if env else Path(__file__).resolve().parent / "cache")


def file_hash(path: str | Path, length: int | None = 16) -> str:
    """SHA-256 of a file's bytes, hex, cut to ``length`` characters (None: all 64)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def sidecar_path(engine: str | Path) -> Path:
    return Path(engine).with_suffix(".json")


def read_sidecar(engine: str | Path) -> dict[str, Any] | None:
    """The fingerprint recorded next to ``engine``; None when there is none or it is not a JSON object."""
    try:
        recorded = json.loads(sidecar_path(engine).read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def write_sidecar(engine: str | Path, fingerprint: Mapping[str, Any]) -> Path:
    path = sidecar_path(engine)
    path.write_text(json.dumps(dict(fingerprint), indent=1))
    return path


def stale_reason(engine: str | Path, fingerprint: Mapping[str, Any]) -> str | None:
    """Why ``engine`` cannot be reused for ``fingerprint`` (None: it can). Extra sidecar fields do not count."""
    if not Path(engine).is_file():
        return "no engine"
    recorded = read_sidecar(engine)
    if recorded is None:
        return "no readable sidecar"
    changed = sorted(k for k, v in fingerprint.items() if recorded.get(k) != v)
    return f"changed: {', '.join(changed)}" if changed else None


def reuse_or_build(engine: str | Path, fingerprint: Mapping[str, Any], build: Callable[[Path], object],
                   force: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
    """``engine`` if its sidecar matches ``fingerprint``, else ``build(engine)`` then a new sidecar.

    The sidecar is ``fingerprint`` plus ``extra`` (notes such as the source path) and the build time. The old
    sidecar is deleted before building, so an interrupted build is never taken for a good engine.
    """
    engine = Path(engine)
    reason = "forced" if force else stale_reason(engine, fingerprint)
    if reason is None:
        log.info("reusing TensorRT engine %s", engine)
        return engine
    log.info("building TensorRT engine %s (%s)", engine.name, reason)
    sidecar_path(engine).unlink(missing_ok=True)
    t0 = time.perf_counter()
    build(engine)
    write_sidecar(engine, {**fingerprint, **(extra or {}), "built_s": round(time.perf_counter() - t0, 1)})
    return engine


def cached_onnx(weights: str | Path) -> Path:
    """The opset-17 ONNX export of HA-CNN ``weights``, exported on first use."""
    from reid.weights import load_model
    from trt_engines.export import export_onnx

    path = cache_dir() / f"hacnn-{file_hash(weights)}.onnx"
    if not path.exists():
        log.info("exporting %s to %s", weights, path)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.onnx")
        export_onnx(load_model(weights), tmp)
        tmp.replace(path)
    return path
