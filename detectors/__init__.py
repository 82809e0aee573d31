"""Person detection (ultralytics YOLO), per-camera tracking (ByteTrack / BoT-SORT) and crop selection.

This package is the only place that imports ultralytics (through ``detectors._ultralytics``, which sets its
offline switches first). ``types`` and ``crops`` do not import it, and the names below that need it load on
first use, so ``from detectors import Detections`` stays cheap for stages that never run a model.

    detector = PersonDetector(default_weights())             # any .pt / .onnx / .engine / OpenVINO folder
    trackers = {cam: CameraTracker(cam, frame_rate=fps) for cam, fps in fps_by_camera.items()}
    batch = latest_frames()                                   # [(camera_id, frame_index, ts, frame), ...]
    for (cam, index, ts, frame), dets in zip(batch, detector.detect([b[3] for b in batch]), strict=True):
        for event in trackers[cam].update(frame, index, ts, dets):
            send(event.materialized())                        # the crop is copied here, a view until now
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.crops import CropQuality, QualityConfig, assess_quality, clamp_boxes, crop_views
from detectors.types import Detections, DetectionsError, TrackCrop, TrackState

if TYPE_CHECKING:
    from detectors.tracking import BestCropSelector, CameraTracker, TrackerConfigError
    from detectors.yolo import DetectorError, PersonDetector, WeightsNotFoundError, default_weights

_LAZY = {
    "BestCropSelector": "detectors.tracking",
    "CameraTracker": "detectors.tracking",
    "TrackerConfigError": "detectors.tracking",
    "DetectorError": "detectors.yolo",
    "PersonDetector": "detectors.yolo",
    "WeightsNotFoundError": "detectors.yolo",
    "default_weights": "detectors.yolo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")


__all__ = [
    "BestCropSelector",
    "CameraTracker",
    "CropQuality",
    "DetectionsError",
    "Detections",
    "DetectorError",
    "PersonDetector",
    "QualityConfig",
    "TrackCrop",
    "TrackState",
    "TrackerConfigError",
    "WeightsNotFoundError",
    "assess_quality",
    "clamp_boxes",
    "crop_views",
    "default_weights",
]
