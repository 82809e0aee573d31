"""The event socket binds to localhost by default and, with CURVE on, lets in only authorised keys."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from pipeline.config import CurveConfig, load_config
from pipeline.keys import generate
from pipeline.supervisor import Supervisor
from reid.paths import PROJECT_ROOT

from .conftest import EXAMPLE


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
    keys = tmp_path / "keys"
    generate(keys, ["dashboard"])
    generate(tmp_path / "strangers", ["intruder"])  # valid keys, never authorised
    cfg = make_config("curve", detect_fps=5)
    curve = CurveConfig(server_secret_key=keys / "server.key_secret", authorized_keys_dir=keys / "authorized",
                        client_secret_key=keys / "pipeline.key_secret")
    secured = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(update={"curve": curve})})
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
