"""Person detection with an ultralytics YOLO model: any weights it loads, person class only, batched cameras.

The detector takes the latest frame of several cameras at once (one ``predict`` call, one batch where the
weights allow it; fixed batch-1 exports are looped by ultralytics) and returns one ``Detections`` per frame.
Weights must exist on disk: a bare name such as ``yolo11n.pt`` would make ultralytics download it, so a
missing file is a ``WeightsNotFoundError`` saying where to put one. A TensorRT engine for the GPU is built
from ``.pt`` weights by ``export_tensorrt`` (ultralytics' exporter, FP16) and cached with a JSON sidecar, so
it is rebuilt only when the weights, input size, TensorRT, GPU or ultralytics change (the rule of
:mod:`trt_engines.cache`, shared with the HA-CNN engines).
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from detectors._ultralytics import FP16_EXPORT_ARGS, ULTRALYTICS_VERSION, YOLO
from detectors.types import Detections
from reid.paths import shared_root
from trt_engines.cache import file_hash, ignored_dir, reuse_or_build

log = logging.getLogger(__name__)

PERSON_CLASS = 0
DEFAULT_ENGINE_DIR = Path(__file__).resolve().parent / "engines"
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def default_weights() -> Path:
    """The shared COCO detector: ``<shared>/weights/yolov8n_int8.onnx`` (``$REID_SHARED`` or ``../shared``)."""
    return shared_root() / "weights" / "yolov8n_int8.onnx"


class WeightsNotFoundError(FileNotFoundError):
    """The detector weights path does not exist; the message says where to put weights."""

    def __init__(self, path: Path):
        super().__init__(
            f"detector weights not found: {path}. Put an ultralytics YOLO weights file there (.pt, .onnx, .engine "
            f"or an OpenVINO folder), e.g. {default_weights()}, or pass --weights PATH; weights are never downloaded"
        )
        self.path = path


class DetectorError(RuntimeError):
    """Bad detector settings (device, frames) or a failed TensorRT export; the message says which."""


def _check_device(device: str) -> str:
    if not _DEVICE.match(device):
        raise DetectorError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DetectorError(f"device {device!r} asked for but CUDA is not available (torch {torch.__version__})")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise DetectorError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def fixed_input_hw(weights: Path) -> tuple[int, int] | None:
    """Input (height, width) recorded in an ultralytics ONNX export's metadata, or None (other formats, no record).

    Ultralytics runs a fixed-size export at its own size whatever ``imgsz`` is asked; reading it up front lets
    ``PersonDetector.imgsz`` tell the truth before the first frame.
    """
    if weights.suffix.lower() != ".onnx" or not weights.is_file():
        return None
    import onnx

    model = onnx.load(str(weights), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("dynamic", "False") == "True" or "imgsz" not in meta:
        return None
    try:
        hw = ast.literal_eval(meta["imgsz"])
    except (ValueError, SyntaxError):
        return None
    if isinstance(hw, int):
        return hw, hw
    return (int(hw[0]), int(hw[1])) if len(hw) == 2 else None


class PersonDetector:
    """YOLO person detector (COCO class 0) over one or more BGR uint8 frames at a time.

    ``imgsz`` is the requested square input size; fixed-size exports (ONNX, engines) override it with their
    own, and ``imgsz``/``input_hw`` report the size actually used. ``device`` is ``cpu``, ``cuda`` or
    ``cuda:N``.
    """

    def __init__(
        self,
        weights: str | Path,
        imgsz: int = 640,
        conf: float = 0.25,
        iou: float = 0.45,
        device: str = "cpu",
        max_det: int = 100,
    ):
        self.weights = Path(weights).expanduser()
        if not self.weights.exists():
            raise WeightsNotFoundError(self.weights)
        if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
            raise DetectorError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
        if imgsz < 32 or max_det < 1:
            raise DetectorError(f"imgsz must be >= 32 and max_det >= 1, got imgsz={imgsz}, max_det={max_det}")
        self.device = _check_device(device)
        if self.weights.suffix.lower() == ".engine" and not self.device.startswith("cuda"):
            raise DetectorError(f"{self.weights}: a TensorRT engine runs on a CUDA device, not {self.device!r}")
        self.conf, self.iou, self.max_det = conf, iou, max_det
        try:
            fixed = fixed_input_hw(self.weights)
            if fixed is not None and fixed != (imgsz, imgsz):
                log.info("%s is a fixed %dx%d export: running at that size, not imgsz=%d",
                         self.weights.name, *fixed, imgsz)
            self.input_hw: tuple[int, int] = fixed or (imgsz, imgsz)
            self._model = YOLO(str(self.weights), task="detect")
            self.detect([np.zeros((*self.input_hw, 3), np.uint8)])  # builds the backend: a bad file fails here
            self._quiet_onnx_workers()
        except Exception as e:  # ultralytics, onnx and the runtimes raise many types for unreadable files
            raise DetectorError(f"{self.weights}: cannot load these weights ({type(e).__name__}: {e})") from e
        log.info("person detector %s on %s, input %dx%d, conf %.2f, iou %.2f",
                 self.weights.name, self.device, *self.input_hw, conf, iou)

    def _quiet_onnx_workers(self) -> None:
        """Give an ONNX model on the CPU a session whose idle workers sleep (``quiet_session_options``).

        ultralytics builds its ONNX Runtime session with default options, whose worker threads spin between
        frames and take the cores the embed and match stages need; it offers no way to pass options, so the
        session it made is swapped for one over the same file. Other formats and GPU providers are left alone.
        """
        backend = getattr(getattr(self._model.predictor, "model", None), "backend", None)
        session = getattr(backend, "session", None)
        if session is None or getattr(backend, "format", None) != "onnx" \
                or session.get_providers() != ["CPUExecutionProvider"]:
            return
        import onnxruntime as ort

        from trt_engines.ort_backend import quiet_session_options

        model_file = self.weights if self.weights.is_file() else next(self.weights.glob("*.onnx"))
        backend.session = ort.InferenceSession(str(model_file), quiet_session_options(),
                                               providers=["CPUExecutionProvider"])

    @property
    def imgsz(self) -> int:
        """Longest side of the network input actually used."""
        return max(self.input_hw)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """People in each frame (BGR uint8, H x W x 3; sizes may differ), boxes in that frame's pixels."""
        if len(frames) == 0:
            return []
        for i, f in enumerate(frames):
            if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                got = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
                raise DetectorError(f"frames[{i}] must be a BGR uint8 (H, W, 3) array, got {got}")
        results = self._model.predict(
            list(frames),
            classes=[PERSON_CLASS],
            conf=self.conf,
            iou=self.iou,
            imgsz=list(self.input_hw),
            device=self.device,
            max_det=self.max_det,
            verbose=False,
            stream=False,
            save=False,
        )
        predictor = self._model.predictor
        if predictor is not None and getattr(predictor, "imgsz", None) is not None:
            self.input_hw = (int(predictor.imgsz[0]), int(predictor.imgsz[1]))
        out = []
        for r in results:
            boxes = r.boxes
            out.append(Detections(
                boxes.xyxy.cpu().numpy().astype(np.float32, copy=False).reshape(-1, 4),
                boxes.conf.cpu().numpy().astype(np.float32, copy=False).reshape(-1),
            ))
        return out

    def export_tensorrt(
        self,
        engine_dir: str | Path | None = None,
        batch: int = 1,
        dynamic: bool = False,
        half: bool = True,
        workspace_gib: float | None = None,
        force: bool = False,
    ) -> Path:
        """Build (or reuse) a TensorRT engine of these ``.pt`` weights on this detector's CUDA device.

        ``batch`` is the engine's batch size (the maximum when ``dynamic``: use the number of cameras batched
        together). The engine and its JSON sidecar go to ``engine_dir`` (default ``detectors/engines/``, made
        git-ignored); an engine whose sidecar matches the weights hash, input size, batch, precision, TensorRT
        version, GPU and ultralytics version is reused unless ``force``. Load the result with
        ``PersonDetector(path, device=...)``.
        """
        if self.weights.suffix.lower() == ".engine":
            return self.weights
        if self.weights.suffix.lower() != ".pt":
            raise DetectorError(
                f"{self.weights}: ultralytics builds TensorRT engines from PyTorch .pt weights only; pass the .pt "
                f"that this {self.weights.suffix or 'folder'} export came from"
            )
        if not self.device.startswith("cuda"):
            raise DetectorError(f"TensorRT export needs a CUDA device; this detector runs on {self.device!r}")
        if importlib.util.find_spec("tensorrt") is None:
            raise DetectorError("TensorRT export needs the tensorrt package: pip install -e '.[tensorrt]'")
        import tensorrt

        fingerprint = {
            "weights_sha256": file_hash(self.weights, length=None),
            "imgsz": list(self.input_hw),
            "batch": batch,
            "dynamic": dynamic,
            "precision": "fp16" if half else "fp32",
            "tensorrt": tensorrt.__version__,
            "gpu": torch.cuda.get_device_name(torch.device(self.device)),
            "ultralytics": ULTRALYTICS_VERSION,
        }
        out_dir = ignored_dir(Path(engine_dir) if engine_dir is not None else DEFAULT_ENGINE_DIR)
        name = (f"{self.weights.stem}-{self.input_hw[0]}x{self.input_hw[1]}-b{batch}{'-dyn' if dynamic else ''}-"
                f"{fingerprint['precision']}-{fingerprint['weights_sha256'][:12]}")
        return reuse_or_build(out_dir / f"{name}.engine", fingerprint,
                              lambda engine: self._export_engine(engine, batch, dynamic, half, workspace_gib),
                              force=force, extra={"source": str(self.weights)})

    def _export_engine(self, engine: Path, batch: int, dynamic: bool, half: bool,
                       workspace_gib: float | None) -> None:
        """Run ultralytics' TensorRT exporter and move the engine it made to ``engine``."""
        # The exporter writes next to its input (.onnx then .engine), and the weights' folder may be read-only
        # (../shared): export a private copy in a scratch folder beside the cache, then move the engine in.
        with tempfile.TemporaryDirectory(dir=engine.parent, prefix=".export-") as tmp:
            src = Path(tmp) / self.weights.name
            shutil.copy2(self.weights, src)
            built = YOLO(str(src), task="detect").export(
                format="engine",
                imgsz=list(self.input_hw),
                batch=batch,
                dynamic=dynamic,
                device=self.device,
                workspace=workspace_gib,
                simplify=importlib.util.find_spec("onnxslim") is not None,
                verbose=False,
                **(FP16_EXPORT_ARGS if half else {}),
            )
            if not built or not Path(built).is_file():
                raise DetectorError(f"exporting {self.weights} made no engine (ultralytics returned {built!r})")
            Path(built).replace(engine)
        log.info("built TensorRT engine %s (%.1f MB)", engine, engine.stat().st_size / 1e6)
