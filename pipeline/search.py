"""Search the identities by photo, or for the identities most like a given one.

    python -m pipeline.search --photo person.jpg [--top 10] [--json] (--run-dir DIR | --redis URL)
        [--config cams.yaml] [--thumbnails-out DIR]
    python -m pipeline.search --similar-to 7 ...

The photo is embedded exactly as the pipeline embeds a crop (``trt_engines.embedder.build_embedder`` with the
config's ``reid`` section) and compared with every identity's prototypes (the gallery in Redis, the matcher's
own :class:`~reid.identity.gallery.Gallery`): an identity scores its best cosine over its prototypes, as a track
does when it is matched. For a finished run, ``--run-dir`` starts the run's embedded Redis from its append-only
file (``DIR/redis``) for the duration of the search. Exit codes: 0 found (maybe nothing), 2 bad input (the
photo, the identity, the config), 1 Redis unusable.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reid.identity.album import Album
from reid.identity.config import RedisConfig
from reid.identity.gallery import Gallery, GalleryMirror
from reid.identity.matcher import aggregate_embeddings
from reid.identity.records import Identity
from reid.identity.store import IdentityStore
from reid.log import setup_logging

log = logging.getLogger("pipeline.search")

MIN_PHOTO_SIDE_PX = 16  # smaller than this is not a person anyone could recognise (crops are 160x64 for the model)
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_SIDE_PX = 8192  # larger is no photo of a person (and decodes to hundreds of MB)


class PhotoError(ValueError):
    """A photo that cannot be searched with; the message names it and says why."""


class UnknownIdentity(KeyError):
    """``--similar-to`` an identity that does not exist (expired, or never minted)."""


def header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an image's header, nothing decoded; None for a format not listed or a broken header.
    Pillow's format classes are used directly, not ``Image.open``:
    ultralytics patches that to fetch a HEIF plugin from the network for data it does not recognise."""
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin

    formats = ((b"\xff\xd8", JpegImagePlugin.JpegImageFile), (b"\x89PNG", PngImagePlugin.PngImageFile),
               (b"GIF8", GifImagePlugin.GifImageFile), (b"BM", BmpImagePlugin.BmpImageFile),
               (b"II*\x00", TiffImagePlugin.TiffImageFile), (b"MM\x00*", TiffImagePlugin.TiffImageFile))
    kind = next((cls for magic, cls in formats if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = WebPImagePlugin.WebPImageFile
    if kind is None:
        return None
    try:
        with kind(io.BytesIO(data)) as header:
            return header.size
    except Exception:  # noqa: BLE001 - any broken header: leave the verdict to the decoder
        return None


def decode_photo(data: bytes, name: str, max_side_px: int = MAX_PHOTO_SIDE_PX) -> np.ndarray:
    """BGR image of ``data``; raises :class:`PhotoError` naming ``name`` when it is empty, too big (in bytes, or
    in pixels: read from the header before anything is decoded, since a small compressed file can hold an image of
    gigabytes), not an image or too small to hold a person."""
    if not data:
        raise PhotoError(f"{name}: the file is empty")
    if len(data) > MAX_PHOTO_BYTES:
        raise PhotoError(f"{name}: {len(data)} bytes, more than the {MAX_PHOTO_BYTES} allowed")
    size = header_size(data)
    if size is None:  # other formats OpenCV reads (JPEG 2000, AVIF, PBM, HDR...) would decode before any check
        raise PhotoError(f"{name}: not an image this service reads (JPEG, PNG, BMP, WebP, GIF or TIFF)")
    if max(size) > max_side_px:
        raise PhotoError(f"{name}: {size[0]}x{size[1]} px, larger than {max_side_px} px a side")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise PhotoError(f"{name}: not an image OpenCV can read (JPEG, PNG, BMP, WebP, ...)")  # a broken body
    h, w = img.shape[:2]
    if min(h, w) < MIN_PHOTO_SIDE_PX:
        raise PhotoError(f"{name}: {w}x{h} px is too small (at least {MIN_PHOTO_SIDE_PX} px a side)")
    return img


def read_photo(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PhotoError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_photo(data, str(path))


@dataclass
class Hit:
    """One identity in an answer."""

    global_id: int
    similarity: float
    cameras: list[str]
    first_seen_ts: float
    last_seen_ts: float
    num_tracks: int
    thumbnails: list[int] = field(default_factory=list)  # numbers, best first (see reid.identity.album)


class Searcher:
    """Ranks identities by similarity to an embedding, a photo or another identity."""

    def __init__(self, store: IdentityStore, album: Album, embedder=None) -> None:  # noqa: ANN001 - an Embedder
        self.store = store
        self.album = album
        self.embedder = embedder
        self.mirror = GalleryMirror(store, Gallery(store.dim, index="numpy"))
        self.mirror.reload()

    def embed_photo(self, img: np.ndarray) -> np.ndarray:
        if self.embedder is None:
            raise RuntimeError("this searcher has no embedder: build it with one to search by photo")
        return aggregate_embeddings(self.embedder.embed([img]))  # a one-crop track, as the matcher sees it

    def search_photo(self, img: np.ndarray, top: int = 10) -> list[Hit]:
        return self.search_embedding(self.embed_photo(img), top)

    def search_embedding(self, emb: np.ndarray, top: int = 10, exclude: int | None = None) -> list[Hit]:
        self.mirror.sync()
        gids, scores = self.mirror.gallery.scores(np.atleast_2d(emb))
        best = scores.max(axis=0) if len(scores) else np.zeros(0, np.float32)
        order = np.argsort(-best, kind="stable")
        hits = []
        for j in order:
            gid = int(gids[j])
            if gid == exclude:
                continue
            hits.append(self.hit(self.mirror.gallery.identities[gid], float(best[j])))
            if len(hits) >= top:
                break
        return hits

    def similar_to(self, global_id: int, top: int = 10) -> list[Hit]:
        """Identities most like ``global_id``: best cosine between any of its prototypes and any of theirs."""
        self.mirror.sync()
        ident = self.mirror.gallery.identities.get(global_id) or self.store.get(global_id)
        if ident is None:
            raise UnknownIdentity(global_id)
        return self.search_embedding(ident.prototypes, top, exclude=global_id)

    def hit(self, ident: Identity, similarity: float) -> Hit:
        timeline = self.album.timeline(ident.global_id)
        cams = {a.camera_id for a in timeline} | {t.camera_id for t in ident.tracks} | {ident.last_camera}
        return Hit(ident.global_id, round(similarity, 4) if math.isfinite(similarity) else 0.0, sorted(cams),
                   ident.first_seen_ts, ident.last_seen_ts, ident.num_tracks,
                   self.album.thumbnail_numbers(ident.global_id))


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_for(config: RedisConfig, run_dir: Path | None, url: str | None) -> Iterator[str]:
    """``url``, or the URL of the finished run's embedded Redis started from ``run_dir/redis`` with the config's
    embedded settings (binary, password, socket kind) on a free port."""
    from reid.identity.redis_server import redis_url_for

    if url:
        config = config.model_copy(update={"url": url})
    else:
        data = run_dir / "redis" if run_dir is not None else None
        if data is None or not data.is_dir():
            raise FileNotFoundError(f"{run_dir}: no redis/ folder (not a run directory, or a run with an external "
                                    "Redis: use --redis URL)")
        config = config.model_copy(update={"url": None, "embedded_dir": data, "embedded_port": 0})
    with redis_url_for(config) as found:
        yield found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--photo", type=Path, help="a photo of a person (best: cropped to the person)")
    what.add_argument("--similar-to", type=int, metavar="GID", help="a global id: the identities most like it")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--run-dir", type=Path, help="a finished run's directory (its embedded Redis is started)")
    where.add_argument("--redis", help="URL of the Redis holding the identities (a running pipeline's)")
    p.add_argument("--config", type=Path, default=None,
                   help="pipeline YAML: its reid section (weights, backend) and Redis settings (default: the defaults)")
    p.add_argument("--top", type=int, default=10, help="identities listed (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--thumbnails-out", type=Path, default=None,
                   help="write the listed identities' thumbnails to DIR/<gid>/<n>.jpg and list their paths")
    args = p.parse_args(argv)
    if args.top < 1:
        p.error("--top must be at least 1")
    return args


def save_thumbnails(album: Album, hits: list[Hit], out: Path) -> dict[int, list[str]]:
    paths: dict[int, list[str]] = {}
    for h in hits:
        for n in h.thumbnails:
            jpeg = album.thumbnail(h.global_id, n)
            if jpeg:
                path = out / str(h.global_id) / f"{n}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg)
                paths.setdefault(h.global_id, []).append(str(path))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.WARNING)
    from pipeline.config import ConfigError, ReidConfig, load_config
    from reid.identity.config import GalleryConfig, MatcherConfig

    try:
        cfg = load_config(args.config) if args.config else None
        img = read_photo(args.photo) if args.photo else None
    except (ConfigError, PhotoError) as e:
        log.error("%s", e)
        return 2
    reid_cfg = cfg.reid if cfg else ReidConfig()
    matcher_cfg = cfg.matcher if cfg else MatcherConfig()
    gallery_cfg = cfg.gallery if cfg else GalleryConfig()
    embedder = None
    if img is not None:
        embedder = reid_cfg.build_embedder(max_batch=1)
    try:
        with redis_for(matcher_cfg.redis, args.run_dir, args.redis) as url:
            store = IdentityStore.from_config(matcher_cfg, url)
            album = Album.from_config(store, gallery_cfg)
            searcher = Searcher(store, album, embedder)
            try:
                hits = searcher.search_photo(img, args.top) if img is not None else searcher.similar_to(
                    args.similar_to, args.top)
            except UnknownIdentity:
                log.error("identity %d does not exist (never minted, or expired)", args.similar_to)
                return 2
            paths = save_thumbnails(album, hits, args.thumbnails_out) if args.thumbnails_out else {}
            store.close()
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2
    except Exception as e:  # redis errors, a broken AOF: say what, not a traceback
        if type(e).__module__.startswith(("redis", "reid.identity.redis_server")):
            log.error("Redis: %s", e)
            return 1
        raise
    query = {"photo": str(args.photo)} if args.photo else {"similar_to": args.similar_to}
    rows = [{**asdict(h), "thumbnail_paths": paths.get(h.global_id, [])} for h in hits]
    if args.json:
        print(json.dumps({**query, "identities": len(searcher.mirror.gallery), "results": rows}))
        return 0
    print(f"{len(searcher.mirror.gallery)} identities searched; top {len(hits)}:")
    print(f"{'gid':>6} {'similarity':>10}  {'cameras':<20} {'first seen':>10} {'last seen':>10}  thumbnails")
    for r in rows:
        thumbs = ", ".join(r["thumbnail_paths"]) or f"{len(r['thumbnails'])} in Redis"
        print(f"{r['global_id']:>6} {r['similarity']:>10.4f}  {','.join(r['cameras']):<20} "
              f"{r['first_seen_ts']:>10.1f} {r['last_seen_ts']:>10.1f}  {thumbs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
