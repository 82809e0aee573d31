"""Every available backend agrees with PyTorch float32 on real crops; bad crops get clear errors."""

import cv2
import numpy as np
import pytest

from reid.transforms import EmptyCropError
from trt_engines.embedder import BackendUnavailableError, build_embedder
from trt_engines.ort_backend import OnnxRuntimeEmbedder

from .conftest import require_tensorrt


@pytest.fixture(scope="module")
def crops(cuhk03):
    """Real BGR crops of varied sizes, as a detector would cut them."""
    out = []
    for i, s in enumerate(cuhk03.query.samples[:13]):
        img = cv2.imread(str(s.path))
        out.append(img if i % 3 else img[5 : img.shape[0] - 7, 3:])  # some misaligned
    return out


@pytest.fixture(scope="module")
def reference(tiny_weights, crops):
    return build_embedder("torch", "fp32", tiny_weights, device="cpu").embed(crops)


def test_reference_embeddings_are_unit_halves(reference):
    assert reference.shape == (13, 1024) and reference.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reference[:, :512], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(reference[:, 512:], axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("n,max_batch", [(1, 8), (7, 8), (13, 4)])
def test_onnxruntime_fp32_matches_torch(tiny_weights, crops, reference, n, max_batch):
    emb = build_embedder("onnxruntime", "fp32", tiny_weights, device="cpu", max_batch=max_batch)
    assert isinstance(emb, OnnxRuntimeEmbedder)
    out = emb.embed(crops[:n])
    assert out.shape == (n, 1024)
    assert np.abs(out - reference[:n]).max() < 1e-4


def test_auto_on_cpu_is_onnxruntime(tiny_weights):
    emb = build_embedder("auto", "fp32", tiny_weights, device="cpu")
    assert emb.name == "onnxruntime"
    # idle workers sleep: spinning ones take the cores the detect and match stages need
    assert emb.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_bad_crops_and_options_are_clear_errors(tiny_weights, crops):
    emb = build_embedder("onnxruntime", "fp32", tiny_weights, device="cpu")
    with pytest.raises(EmptyCropError, match="crop 1: empty"):
        emb.embed([crops[0], crops[0][:0]])
    with pytest.raises(EmptyCropError, match="crop 0: contains NaN"):
        emb.embed([np.full((40, 20, 3), np.nan, np.float32)])
    assert emb.embed([]).shape == (0, 1024)
    with pytest.raises(ValueError, match="unknown backend"):
        build_embedder("openvino", weights=tiny_weights)
    with pytest.raises(BackendUnavailableError, match="needs a quantised model"):
        build_embedder("onnxruntime", "int8", tiny_weights, device="cpu")
    with pytest.raises(BackendUnavailableError, match="needs CUDA"):
        build_embedder("torch", "fp16", tiny_weights, device="cpu")


def test_tensorrt_backend_matches_torch(tiny_weights, crops, reference):
    require_tensorrt()
    for precision, check in (("fp32", "abs"), ("fp16", "cos")):
        emb = build_embedder("tensorrt", precision, tiny_weights, max_batch=8)
        out = emb.embed(crops)
        if check == "abs":
            assert np.abs(out - reference).max() < 1e-4
        else:
            cos = (out * reference).sum(1) / 2
            assert cos.min() > 0.999
