"""Pipeline fixtures: the example config on a private run directory and event port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from pipeline.config import PipelineConfig, load_config
from pipeline.stage import Stage
from reid.identity.redis_server import free_port
from reid.paths import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "configs" / "cams.example.yaml"


def example_config(run_dir: Path, detect_fps: float = 2.5) -> PipelineConfig:
    cfg = load_config(EXAMPLE).with_run_dir(run_dir).with_detect_fps(detect_fps)
    endpoints = cfg.endpoints.model_copy(update={"events": f"tcp://127.0.0.1:{free_port()}"})
    return cfg.model_copy(update={"endpoints": endpoints})


def write_config(path: Path, videos: dict[str, Path], detect_fps: float = 5, **endpoints: str) -> Path:
    """A pipeline YAML for a subprocess run: one camera per ``camera_id -> video``, the events on a free port
    unless ``endpoints`` says otherwise (``detect="tcp://..."`` and so on)."""
    cams = "".join(f"  - id: {cam}\n    source: {video}\n    detect_fps: {detect_fps}\n"
                   for cam, video in videos.items())
    endpoints = {"events": f"tcp://127.0.0.1:{free_port()}", **endpoints}
    eps = "".join(f"  {name}: {value}\n" for name, value in endpoints.items())
    path.write_text(f"name: {path.stem}\ncameras:\n{cams}endpoints:\n{eps}")
    return path


@pytest.fixture
def make_config(tmp_path):
    def make(name: str = "run", **kw) -> PipelineConfig:
        return example_config(tmp_path / name, **kw)

    return make


class EchoStage(Stage):
    """A minimal stage over real sockets: counts the valid messages it gets on the detect endpoint."""

    name = "echo"
    input = "detect"

    def handle(self, msg):
        self.counters["handled"] += 1


class Downstream:
    """The input side of a next stage (a ROUTER, as ``pipeline.stage`` binds it): ``recv_multipart`` returns the
    message frames without the sender's routing id."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def poll(self, timeout_ms: int) -> int:
        return self.sock.poll(timeout_ms)

    def recv_multipart(self) -> list[bytes]:
        return self.sock.recv_multipart()[1:]

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def running(stage: Stage, *outputs: str) -> Iterator[tuple[zmq.Socket, list[Downstream]]]:
    """Run ``stage`` in a thread over its real sockets, as the supervisor would: a PULL socket stands in for the
    supervisor's control socket and ROUTER sockets for the downstream stages named in ``outputs``; yields a DEALER
    socket connected to the stage's input (as an upstream stage's) and those downstream inputs."""
    stage.open_sockets()
    control = stage.ctx.socket(zmq.PULL)
    control.bind(stage.config.endpoint("control"))
    pulls: list = [control]
    for name in outputs:
        sock = stage.ctx.socket(zmq.ROUTER)
        sock.bind(stage.config.endpoint(name))
        pulls.append(Downstream(sock))
    stage.setup()
    runner = threading.Thread(target=stage.run, daemon=True)
    runner.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.DEALER)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(stage.config.endpoint(stage.input))
    try:
        yield push, pulls[1:]
    finally:
        stage.stop.set()
        runner.join(5)
        push.close()
        ctx.term()
        for sock in pulls:
            sock.close()
        stage.teardown()
        stage.close_sockets()
