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
    cfg = load_config(EXAMPLE).with_run_dir(run_dir)
    cams = [c.model_copy(update={"detect_fps": detect_fps}) for c in cfg.cameras]
    endpoints = cfg.endpoints.model_copy(update={"events": f"tcp://127.0.0.1:{free_port()}"})
    return cfg.model_copy(update={"cameras": cams, "endpoints": endpoints})


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


@contextlib.contextmanager
def running(stage: Stage, *outputs: str) -> Iterator[tuple[zmq.Socket, list[zmq.Socket]]]:
    """Run ``stage`` in a thread over its real sockets, as the supervisor would: PULL sockets stand in for the
    supervisor's control socket and for the downstream stages named in ``outputs``; yields a PUSH socket
    connected to the stage's input and those PULL sockets."""
    stage.open_sockets()
    pulls = []
    for name in ("control", *outputs):
        sock = stage.ctx.socket(zmq.PULL)
        sock.bind(stage.config.endpoint(name))
        pulls.append(sock)
    stage.setup()
    runner = threading.Thread(target=stage.run, daemon=True)
    runner.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
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
