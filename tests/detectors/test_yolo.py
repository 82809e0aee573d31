"""PersonDetector on real images: person counts, batching, input size from the export, clear errors."""

import cv2
import numpy as np
import pytest
import torch

from detectors.types import Detections
from detectors.yolo import DetectorError, PersonDetector, WeightsNotFoundError, fixed_input_hw


@pytest.fixture(scope="module")
def bus_zidane(assets):
    bus, zidane = cv2.imread(str(assets / "bus.jpg")), cv2.imread(str(assets / "zidane.jpg"))
    assert bus is not None and zidane is not None, f"bus.jpg / zidane.jpg missing from {assets}"
    return bus, zidane


@pytest.mark.slow
def test_bus_has_four_people_and_zidane_two(weights_640, bus_zidane):
    detector = PersonDetector(weights_640, device="cpu")
    assert detector.imgsz == 640
    bus, zidane = bus_zidane
    out = detector.detect([bus, zidane])  # one call, two frames of different sizes
    assert [len(d) for d in out] == [4, 2]
    for d, frame in zip(out, (bus, zidane), strict=True):
        assert isinstance(d, Detections) and d.track_id is None
        h, w = frame.shape[:2]
        assert (d.xyxy[:, 2] > d.xyxy[:, 0]).all() and (d.xyxy[:, 3] > d.xyxy[:, 1]).all()
        assert (d.xyxy >= -1).all() and (d.xyxy[:, 0::2] <= w + 1).all() and (d.xyxy[:, 1::2] <= h + 1).all()
    assert sorted(out[0].conf.round(2).tolist(), reverse=True)[:3] == pytest.approx([0.90, 0.90, 0.89], abs=0.02)


def test_batched_detection_matches_one_frame_at_a_time(detector_320, bus_zidane, indoor_frames):
    frames = [bus_zidane[0], indoor_frames[60], bus_zidane[1]]
    batched = detector_320.detect(frames)
    single = [detector_320.detect([f])[0] for f in frames]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-3)
        np.testing.assert_allclose(b.conf, s.conf, atol=1e-5)
    assert [len(d) for d in batched][:2] == [4, 1]
    assert detector_320.detect([]) == []


def test_onnx_workers_sleep_between_frames(detector_320):
    """ultralytics' own session spins its idle workers, taking the cores the other stages need."""
    session = detector_320._model.predictor.model.backend.session
    options = session.get_session_options()
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_fixed_size_export_runs_at_its_own_size(weights_320):
    assert fixed_input_hw(weights_320) == (320, 320)
    assert PersonDetector(weights_320, imgsz=640).imgsz == 320


def test_missing_weights_say_where_to_put_them(tmp_path):
    for missing in (tmp_path / "nope.onnx", "yolo11n.pt"):  # a bare name must not trigger a download
        with pytest.raises(WeightsNotFoundError) as e:
            PersonDetector(missing)
        msg = str(e.value)
        assert str(missing) in msg and "yolov8n_int8.onnx" in msg and "--weights" in msg
    assert not (tmp_path / "nope.onnx").exists()


def test_unreadable_weights_fail_at_construction(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="corrupt.onnx: cannot load these weights"):
        PersonDetector(bad)


def test_bad_frames_and_settings_are_rejected(detector_320, weights_320):
    with pytest.raises(DetectorError, match=r"frames\[1\] must be a BGR uint8"):
        detector_320.detect([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)])
    with pytest.raises(DetectorError, match="device must be"):
        PersonDetector(weights_320, device="gpu0")
    with pytest.raises(DetectorError, match="conf and iou"):
        PersonDetector(weights_320, conf=1.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is missing")
def test_cuda_without_a_gpu_is_a_clear_error(weights_320):
    with pytest.raises(DetectorError, match="CUDA is not available"):
        PersonDetector(weights_320, device="cuda:0")


def test_tensorrt_export_needs_pt_weights(detector_320):
    with pytest.raises(DetectorError, match=r"\.pt weights only"):
        detector_320.export_tensorrt()


def _pt_weights(shared):
    found = sorted((shared / "weights").glob("*.pt"))
    return found[0] if found else None


@pytest.mark.gpu
@pytest.mark.slow
def test_tensorrt_engine_is_built_once_and_reused(tmp_path, bus_zidane):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the TensorRT export runs only on a GPU")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt is not installed (pip install -e '.[tensorrt]')")
    from reid.paths import shared_root

    pt = _pt_weights(shared_root())
    if pt is None:
        pytest.skip(f"no YOLO .pt weights in {shared_root() / 'weights'}: ultralytics exports engines from .pt only")
    detector = PersonDetector(pt, device="cuda:0")
    engine = detector.export_tensorrt(engine_dir=tmp_path, batch=2, dynamic=True)
    assert engine.suffix == ".engine" and engine.with_suffix(".json").is_file()
    built = engine.stat().st_mtime_ns
    assert detector.export_tensorrt(engine_dir=tmp_path, batch=2, dynamic=True) == engine
    assert engine.stat().st_mtime_ns == built  # reused, not rebuilt
    trt = PersonDetector(engine, device="cuda:0")
    counts = [len(d) for d in trt.detect(list(bus_zidane))]
    assert counts == [len(d) for d in detector.detect(list(bus_zidane))]
