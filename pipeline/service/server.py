"""The service inside the supervisor's process: uvicorn serving the app from one thread.

Why a thread of the supervisor rather than a stage process: the metrics are the stage reports the supervisor
already holds (a process would need them sent again), the service has no model to load until the first search,
and the supervisor's own loop is mostly waiting on sockets, so the service takes little from the stages (the
replay benchmark in the README measures it). A crash of the service cannot stop a stage: it is a thread apart,
its errors are answered as JSON and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from pipeline.config import PipelineConfig
from pipeline.service.app import ServiceContext, create_app
from pipeline.service.calibration_site import CalibrationSite
from pipeline.service.config import HttpConfig
from pipeline.service.metrics import PipelineMetrics
from reid.identity.album import Album
from reid.identity.store import IdentityStore

log = logging.getLogger(__name__)


class ServiceThread:
    """uvicorn serving ``app`` from a daemon thread; :meth:`start` returns once it listens."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout_s: float = 15.0) -> ServiceThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the HTTP service could not listen on {self.host}:{self.port} (port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP service did not start within {timeout_s:.0f} s")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def embedder_factory(config: PipelineConfig) -> Callable[[], Any]:
    """Builds the pipeline's own embedder (same weights, backend, precision) when the first search comes."""
    return lambda: config.reid.build_embedder(max_batch=1)


def start_service(config: PipelineConfig, http: HttpConfig, redis_url: str, metrics: PipelineMetrics | None,
                  health: Callable[[], dict[str, Any]],
                  config_path: Path | None = None) -> tuple[ServiceThread, IdentityStore]:
    """Start the service of a pipeline whose identities are in ``redis_url``; returns it and its store (close it
    after stopping the service). ``config_path`` is the file ``config`` was loaded from: the calibration page
    writes its matrices next to it (without it, it offers them for download)."""
    store = IdentityStore.from_config(config.matcher, redis_url)
    album = Album.from_config(store, config.gallery)
    cameras = [{"id": c.id, "live": c.is_live} for c in config.cameras]
    ctx = ServiceContext(http, store, album, cameras, config.resolved_run_dir, metrics, embedder_factory(config),
                         health, CalibrationSite.from_config(config, config_path))
    try:
        service = ServiceThread(create_app(ctx), http.host, http.port).start()
    except RuntimeError:
        store.close()
        raise
    log.info("HTTP service on %s (web page /, calibration /calibrate, API /api, metrics /metrics)", service.url)
    return service, store
