"""The FastAPI application: identities, their timelines and thumbnails, search by photo, camera snapshots,
metrics, health, the web page, and the calibration page (``calibration_api.py``).

Every error is JSON, ``{"error": message, "status": code}``, whatever raised it (a missing identity, a bad upload,
an unknown route, a failed validation). With a token configured, every request but ``/healthz`` and the two pages
(HTML and scripts, no data) must carry ``Authorization: Bearer <token>`` or the pages' ``reid_token`` cookie (the
pages ask for the token on their first 401). A request that changes something (POST) from another site's page
is refused (403) whatever the token: its ``Origin`` must be the service itself.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.search import PhotoError, Searcher, decode_photo
from pipeline.service.calibration_api import add_calibration_routes
from pipeline.service.calibration_site import CalibrationSite
from pipeline.service.config import HttpConfig, is_loopback
from pipeline.service.metrics import PipelineMetrics
from pipeline.snapshots import SnapshotError, read_snapshot, render_snapshot, snapshot_folder, snapshot_path
from reid.identity.album import Album
from reid.identity.records import Identity
from reid.identity.store import IdentityStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_COOKIE = "reid_token"  # the pages' way to send the token: an <img> cannot carry an Authorization header
PUBLIC_PAGES = frozenset({"/", "/calibrate", "/healthz"})  # the pages hold no data: they ask for the token


def is_public(path: str) -> bool:
    return path in PUBLIC_PAGES or path.startswith("/static/")


def has_token(request: Request, token: str) -> bool:
    """``Authorization: Bearer <token>``, or the pages' cookie (SameSite=Strict: never sent by another site)."""
    auth = request.headers.get("authorization", "").encode()
    cookie = unquote(request.cookies.get(TOKEN_COOKIE, "")).encode()  # the pages set it URI-encoded
    return hmac.compare_digest(auth, f"Bearer {token}".encode()) or hmac.compare_digest(cookie, token.encode())


def where(loc: tuple) -> str:
    """A validation error's place, list items numbered from 1 as the pages number them (``body.points.2.x`` is
    ``body.points[3].x``)."""
    return "".join(f"[{p + 1}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def same_origin(request: Request) -> bool:
    """A request that changes something must not come from another site's page (a browser sends a form POST
    anywhere without asking): its ``Origin``, when it has one, must be this service. Tools send no Origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    try:
        return urlsplit(origin).netloc == request.headers.get("host")
    except ValueError:  # not even a URL
        return False


def loopback_host(request: Request) -> bool:
    """Without a token the service listens on loopback only, and must also be *named* as loopback: a page whose
    own name resolves to 127.0.0.1 (DNS rebinding) would otherwise read it, and pass the Origin check too."""
    host = request.headers.get("host", "")
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    return is_loopback(name)


@dataclass
class ServiceContext:
    """What the endpoints read: the identity store and album, the cameras, the run directory, the metrics, a
    searcher whose embedder is built on the first search (the page and the lists never pay for the model), and
    the cameras' calibration (None: a service built without its pipeline config has no calibration page)."""

    config: HttpConfig
    store: IdentityStore
    album: Album
    cameras: list[dict[str, Any]]  # id, live
    run_dir: Path
    metrics: PipelineMetrics | None
    make_embedder: Callable[[], Any]
    health: Callable[[], dict[str, Any]] = field(default=lambda: {})
    calibration: CalibrationSite | None = None
    _searcher: Searcher | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def search(self, fn: Callable[[Searcher], Any]) -> Any:
        """Run ``fn`` with the searcher, one at a time (its local gallery is updated in place)."""
        with self._lock:
            if self._searcher is None:
                self._searcher = Searcher(self.store, self.album, self.make_embedder())
            return fn(self._searcher)


def identity_json(ident: Identity, album: Album) -> dict[str, Any]:
    cams = sorted({t.camera_id for t in ident.tracks} | {ident.last_camera})
    thumbs = album.thumbnail_numbers(ident.global_id)
    return {"global_id": ident.global_id, "first_seen_ts": ident.first_seen_ts, "last_seen_ts": ident.last_seen_ts,
            "last_camera": ident.last_camera, "cameras": cams, "num_tracks": ident.num_tracks,
            "thumbnails": [f"/api/identities/{ident.global_id}/thumbnails/{n}.jpg" for n in thumbs]}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def create_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="reid pipeline", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    token = ctx.config.resolved_token()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = [f"{where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        return error(422, "; ".join(msgs))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.middleware("http")
    async def guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        if not token and not loopback_host(request):
            return error(403, f"Host {request.headers.get('host')!r} is not this service's loopback address: without "
                              "a token the service answers 127.0.0.1 / localhost only")
        if request.method not in SAFE_METHODS and not same_origin(request):
            return error(403, f"cross-site request refused: Origin {request.headers.get('origin')} is not this "
                              "service")
        if token and not is_public(request.url.path) and not has_token(request, token):
            return error(401, "missing or wrong bearer token (Authorization: Bearer <token>; the web pages ask for "
                              f"it once and keep it in the {TOKEN_COOKIE} cookie)")
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        ctx.store.client.ping()
        return {"status": "ok", **ctx.health()}

    @app.get("/metrics")
    def metrics() -> Response:
        if ctx.metrics is None:
            raise HTTPException(404, "no metrics: the service runs without a supervisor")
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/identities")
    def identities(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1)] = 50) -> dict[str, Any]:
        """Most recently seen first."""
        limit = min(limit, ctx.config.page_size_max)
        total, ids = ctx.store.recent_page(offset, limit)
        found = ctx.store.get_many(ids)
        items = [identity_json(found[g], ctx.album) for g in ids if g in found]
        return {"total": total, "offset": offset, "limit": limit, "items": items}

    def get_identity(gid: int) -> Identity:
        ident = ctx.store.get(gid)
        if ident is None:
            raise HTTPException(404, f"identity {gid} not found (never minted, or expired)")
        return ident

    @app.get("/api/identities/{gid}")
    def identity(gid: int) -> dict[str, Any]:
        ident = get_identity(gid)
        timeline = [a.to_json() for a in ctx.album.timeline(gid)]
        return {**identity_json(ident, ctx.album), "timeline": timeline}

    @app.get("/api/identities/{gid}/thumbnails/{n}.jpg")
    def thumbnail(gid: int, n: int) -> Response:
        jpeg = ctx.album.thumbnail(gid, n)
        if jpeg is None:
            raise HTTPException(404, f"identity {gid} has no thumbnail {n}")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=5"})

    @app.post("/api/search")
    def search(photo: Annotated[UploadFile, File()], top: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        limit = ctx.config.max_upload_bytes
        data = photo.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{photo.filename}: larger than the {limit} bytes allowed")
        try:
            img = decode_photo(data, photo.filename or "upload")
        except PhotoError as e:
            raise HTTPException(400, str(e)) from None
        t0 = time.perf_counter()
        hits = ctx.search(lambda s: s.search_photo(img, top))
        results = []
        for h in hits:
            results.append({"global_id": h.global_id, "similarity": h.similarity, "cameras": h.cameras,
                            "first_seen_ts": h.first_seen_ts, "last_seen_ts": h.last_seen_ts,
                            "thumbnails": [f"/api/identities/{h.global_id}/thumbnails/{n}.jpg"
                                           for n in h.thumbnails]})
        return {"results": results, "search_ms": round(1e3 * (time.perf_counter() - t0), 1)}

    @app.get("/api/cameras")
    def cameras() -> dict[str, Any]:
        out = []
        for cam in ctx.cameras:
            snap = snapshot_path(snapshot_folder(ctx.run_dir), cam["id"])
            try:
                age = round(time.time() - snap.stat().st_mtime, 2)
            except OSError:
                age = None
            out.append({**cam, "snapshot": f"/api/cameras/{cam['id']}/snapshot.jpg" if age is not None else None,
                        "snapshot_age_s": age})
        return {"cameras": out}

    @app.get("/api/cameras/{camera_id}/snapshot.jpg")
    def snapshot(camera_id: str) -> Response:
        """The camera's latest snapshot, its boxes labelled with the global ids the store holds now."""
        if camera_id not in {c["id"] for c in ctx.cameras}:
            raise HTTPException(404, f"no camera {camera_id!r}")
        try:  # written atomically (os.replace) by the detect stage: a read sees a whole file
            snap = read_snapshot(snapshot_path(snapshot_folder(ctx.run_dir), camera_id))
            jpeg = render_snapshot(snap, ctx.store.lookup_run_tracks)
        except FileNotFoundError:
            raise HTTPException(404, f"camera {camera_id}: no snapshot yet") from None
        except SnapshotError as e:
            raise HTTPException(500, str(e)) from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    add_calibration_routes(app, ctx.calibration, ctx.config.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
