"""ONNX export at opset 17: TensorRT-importable ops only, and ONNX Runtime agrees with PyTorch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from reid.data import load_images
from reid.transforms import to_float
from reid.weights import load_model
from trt_engines.export import export_onnx
from trt_engines.trt_ops import TENSORRT_ONNX_OPS, unsupported_ops


@pytest.fixture(scope="module")
def exported(tiny_weights, tmp_path_factory):
    model = load_model(tiny_weights)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "hacnn.onnx")
    return model, path


def test_graph_is_opset17_with_tensorrt_ops_only(exported):
    _, path = exported
    graph = onnx.load(str(path))
    assert {o.domain: o.version for o in graph.opset_import}.get("", None) == 17
    ops = {n.op_type for n in graph.graph.node}
    assert "GridSample" in ops and "AffineGrid" not in ops
    assert ops <= TENSORRT_ONNX_OPS, ops - TENSORRT_ONNX_OPS
    assert "AffineGrid" not in TENSORRT_ONNX_OPS


def test_unsupported_ops_are_reported():
    node = onnx.helper.make_node("AffineGrid", ["theta", "size"], ["grid"])
    graph = onnx.helper.make_graph([node], "g", [], [])
    assert unsupported_ops(onnx.helper.make_model(graph)) == ["AffineGrid"]


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_matches_pytorch_on_real_crops(exported, cuhk03, batch):
    model, path = exported
    x = to_float(load_images(cuhk03.query.samples[:batch]))
    with torch.inference_mode():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[0]
    assert out.shape == (batch, 1024)
    assert np.abs(out - ref).max() < 1e-4
