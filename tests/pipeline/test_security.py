"""Every socket binds to localhost by default; with CURVE on, the event socket and tcp stage endpoints let in only
authorised keys."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

from pipeline.config import CurveConfig, load_config
from pipeline.keys import generate
from pipeline.messages import FrameMsg, encode
from pipeline.security import CurveGuard, curve_client, needs_curve
from pipeline.supervisor import Supervisor
from reid.paths import PROJECT_ROOT

from .conftest import EXAMPLE, EchoStage, example_config, free_port


def test_every_default_endpoint_is_local(tmp_path):
    cfg = load_config(EXAMPLE)
    assert cfg.endpoints.events.startswith("tcp://127.0.0.1:")
    for name in ("detect", "embed", "match", "control"):
        assert cfg.endpoint(name).startswith("ipc://")
    assert cfg.endpoints.curve is None and cfg.events_include_crops is False


def _subscriber(endpoint: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.subscribe", endpoint, "--timeout", "90", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)


def test_curve_admits_only_authorised_subscribers(make_config, tmp_path):
    """The whole pipeline over CURVE (event socket and tcp stage endpoints): authorised subscribers get every event,
    a stranger's key and a plain subscriber get nothing."""
    keys = tmp_path / "keys"
    generate(keys, ["dashboard"])
    generate(tmp_path / "strangers", ["intruder"])  # valid keys, never authorised
    cfg = make_config("curve", detect_fps=5)
    tcp = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("detect", "embed", "match", "control")}
    secured = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(update={"curve": _curve(keys), **tcp})})
    ep = secured.endpoints.events
    allowed = _subscriber(ep, "--server-key", str(keys / "server.key"), "--client-key",
                          str(keys / "dashboard.key_secret"))
    intruder = _subscriber(ep, "--server-key", str(keys / "server.key"), "--client-key",
                           str(tmp_path / "strangers" / "intruder.key_secret"))
    plain = _subscriber(ep)
    try:
        time.sleep(1.0)
        sup = Supervisor(secured, replay=True, speed=None, duration_s=10.0, status=False)
        assert sup.run() == 0
        time.sleep(1.0)
    finally:
        outs = []
        for p in (allowed, intruder, plain):
            p.send_signal(2)
            outs.append(p.communicate(timeout=30)[0])
    assert sup.events, "the pipeline's own (authorised) subscriber got nothing"
    got = [json.loads(line) for line in outs[0].splitlines() if line.strip()]
    assert [e["seq"] for e in got] == [e["seq"] for e in sup.events]
    assert outs[1].strip() == "" and outs[2].strip() == ""


def _curve(keys):
    return CurveConfig(server_secret_key=keys / "server.key_secret", authorized_keys_dir=keys / "authorized",
                       client_secret_key=keys / "pipeline.key_secret")


def test_curve_keeps_strangers_off_tcp_stage_endpoints(tmp_path):
    """A stage listening on tcp with CURVE on takes messages only from peers with an authorised key: a plain
    client and one with a valid but unlisted key get nothing in (not even counted as malformed)."""
    keys, strangers = tmp_path / "keys", tmp_path / "strangers"
    generate(keys, [])
    generate(strangers, ["intruder"])
    cfg = example_config(tmp_path / "run")
    endpoints = cfg.endpoints.model_copy(update={"detect": f"tcp://127.0.0.1:{free_port()}",
                                                 "control": f"tcp://127.0.0.1:{free_port()}", "curve": _curve(keys)})
    cfg = cfg.model_copy(update={"endpoints": endpoints})
    assert needs_curve(cfg.endpoint("detect"), endpoints.curve) and not needs_curve("ipc:///x", endpoints.curve)
    stage = EchoStage(cfg)
    stage.open_sockets()
    ctrl = stage.ctx.socket(zmq.PULL)
    stage.guard.bind(ctrl, cfg.endpoint("control"))
    runner = threading.Thread(target=stage.run, daemon=True)
    runner.start()
    ctx = zmq.Context()
    plain, stranger, member = (ctx.socket(zmq.DEALER) for _ in range(3))
    curve_client(stranger, strangers / "intruder.key_secret", keys / "server.key")
    CurveGuard(ctx, endpoints.curve).client(member)
    frame = encode(FrameMsg("c0", 0, 0.0, np.zeros((4, 4, 3), np.uint8)))
    try:
        for sock in (plain, stranger, member):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, 200)
            sock.connect(cfg.endpoint("detect"))
        for sock in (plain, stranger):
            for _ in range(5):
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart(frame)
                    sock.send(b"\xff" * 100)
        member.send_multipart(frame)
        deadline = time.monotonic() + 10
        while stage.counters["handled"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # time for anything the strangers got through to arrive
        reports = ctrl.poll(1000)
    finally:
        stage.stop.set()
        runner.join(5)
        for sock in (plain, stranger, member):
            sock.close()
        ctx.term()
        ctrl.close()
        stage.close_sockets()
    assert stage.counters["handled"] == 1 and stage.counters["received"] == 1
    assert stage.counters["malformed"] == 0
    assert reports, "the stage's reports did not reach the CURVE-protected tcp control socket"
