"""INT8 Q/DQ model: the structure TensorRT's explicit quantisation needs, and ONNX Runtime runs it."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from reid.paths import DEFAULT_WEIGHTS
from trt_engines.embedder import build_embedder
from trt_engines.quantize import calibration_images, main, quantize


@pytest.fixture(scope="module")
def int8_model(cuhk03_root, tmp_path_factory):
    from trt_engines.cache import cached_onnx

    out = tmp_path_factory.mktemp("int8") / "hacnn.int8.onnx"
    calib = calibration_images(cuhk03_root, 64)
    assert calib.shape == (64, 3, 160, 64) and calib.dtype == np.float32
    return quantize(cached_onnx(DEFAULT_WEIGHTS), out, calib)


def test_qdq_symmetric_per_channel(int8_model):
    path = int8_model
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points and all((z == 0).all() for z in zero_points)  # TensorRT needs zero points of 0
    assert {z.dtype for z in zero_points} == {np.dtype(np.int8), np.dtype(np.int32)}  # activations/weights, biases
    scales = [inits.get(n.input[1]) for n in graph.node if n.op_type == "DequantizeLinear"]
    per_channel = [s for s in scales if s is not None and s.ndim == 1 and s.size > 1]
    assert per_channel, "conv weights should carry one scale per output channel"


def test_int8_runs_in_onnxruntime_close_to_float(int8_model, cuhk03):
    import cv2

    path = int8_model
    crops = [cv2.imread(str(s.path)) for s in cuhk03.query.samples[:8]]
    ref = build_embedder("onnxruntime", "fp32", DEFAULT_WEIGHTS, device="cpu").embed(crops)
    out = build_embedder("onnxruntime", "int8", DEFAULT_WEIGHTS, device="cpu", int8_onnx_path=path).embed(crops)
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    # Close, but not the 0.999 of the float paths: see the gate results in trt_engines/quantize.py.
    assert cos.mean() > 0.95 and cos.min() > 0.9, cos


def test_missing_calibration_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["--calib", str(tmp_path / "none"), "--out", str(tmp_path / "x.onnx")]) == 2


def test_an_int8_model_stands_for_its_weights(int8_model, tiny_weights, tmp_path):
    """A model quantised from the shipped weights is refused for other weights (an adapted model needs its own,
    gated again), and accepted for its own."""
    import shutil

    from trt_engines.cache import file_hash
    from trt_engines.embedder import BackendUnavailableError
    from trt_engines.quantize import WEIGHTS_KEY, provenance, stamp

    path = tmp_path / "stamped.int8.onnx"
    shutil.copy(int8_model, path)
    assert "hacnn.source_onnx_sha256" in provenance(path)
    stamp(path, {WEIGHTS_KEY: file_hash(DEFAULT_WEIGHTS, None)})
    build_embedder("onnxruntime", "int8", DEFAULT_WEIGHTS, device="cpu", int8_onnx_path=path)
    with pytest.raises(BackendUnavailableError, match="quantised from other weights"):
        build_embedder("onnxruntime", "int8", tiny_weights, device="cpu", int8_onnx_path=path)
