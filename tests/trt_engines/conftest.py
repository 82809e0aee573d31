import pytest

from trt_engines.embedder import _tensorrt_available


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory):
    """Engine/ONNX cache isolated per test session, so tests never reuse a developer's artefacts."""
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(autouse=True)
def _isolated_cache(engine_cache, monkeypatch):
    monkeypatch.setenv("REID_ENGINE_CACHE", str(engine_cache))


def require_tensorrt() -> None:
    reason = _tensorrt_available()
    if reason:
        pytest.skip(f"TensorRT tests need TensorRT and a CUDA GPU: {reason}")
