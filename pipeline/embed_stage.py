"""Embed stage: HA-CNN embeddings of the selected crops, batched dynamically across cameras.

Crops accumulate until ``batch_size`` are waiting or the oldest has waited ``max_wait_ms``; then one call to
the embedder (TensorRT, ONNX Runtime or PyTorch, see trt_engines) embeds them all, and each input message goes
on with its embeddings attached. A crop that cannot be embedded (empty, NaN, wrong layout) is dropped and
counted; its track's state still goes through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import cv2
import numpy as np

from pipeline.messages import CropsMsg, EmbeddingsMsg, EndMsg, Msg
from pipeline.stage import Stage
from reid.model_spec import EMBEDDING_DIM

log = logging.getLogger(__name__)

EVENT_CROP_LONGEST_PX = 128  # events_include_crops, gallery thumbnails: to recognise the person by, not evidence
EVENT_CROP_JPEG_QUALITY = 80


def crop_problem(crop: np.ndarray) -> str | None:
    if crop.ndim != 3 or crop.shape[2] != 3:
        return f"shape {crop.shape} is not (H, W, 3)"
    if crop.shape[0] < 2 or crop.shape[1] < 2:
        return f"empty crop {crop.shape}"
    if crop.dtype != np.uint8 and not np.isfinite(crop).all():
        return "non-finite values"
    return None


def crop_jpeg(crop: np.ndarray, longest_px: int = EVENT_CROP_LONGEST_PX,
              quality: int = EVENT_CROP_JPEG_QUALITY) -> bytes:
    """A small JPEG of a BGR crop (longest side at most ``longest_px``) for ``events_include_crops``; ``b""`` if
    OpenCV cannot encode it. Made here, where the crops are, so only the chosen few KB go on to the matcher."""
    img = crop if crop.dtype == np.uint8 else np.clip(crop, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    scale = longest_px / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else b""


class EmbedStage(Stage):
    name = "embed"
    input = "embed"
    output = "match"

    def setup(self) -> None:
        self.embedder = self.config.reid.build_embedder()
        log.info("embedder: %s", self.embedder.description)
        self.with_jpegs = self.config.events_include_crops or self.config.gallery.store_crops
        self.queue: list[CropsMsg] = []
        self.queued_crops = 0
        self.oldest = 0.0

    def handle(self, msg: Msg) -> None:
        if isinstance(msg, EndMsg):
            self.flush()
            self.forward_end(msg.camera_id)
            return
        if not isinstance(msg, CropsMsg):
            self.counters["unexpected"] += 1
            return
        if not self.queue:
            self.oldest = time.monotonic()
        self.queue.append(msg)
        self.queued_crops += len(msg.crops)
        if self.queued_crops >= self.config.reid.batch_size:
            self.flush()

    def after_turn(self) -> None:
        if self.queue and (time.monotonic() - self.oldest) * 1e3 >= self.config.reid.max_wait_ms:
            self.flush()

    def flush(self) -> None:
        if not self.queue:
            return
        crops, owners = [], []
        for mi, msg in enumerate(self.queue):
            for ci, crop in enumerate(msg.crops):
                problem = crop_problem(crop)
                if problem:
                    self.counters["bad_crops"] += 1
                    log.warning("camera %s frame %s: crop %d dropped (%s)", msg.camera_id, msg.frame_index, ci,
                                problem)
                    continue
                crops.append(crop)
                owners.append((mi, ci))
        t0 = time.perf_counter()
        embs = self.embedder.embed(crops) if crops else np.zeros((0, EMBEDDING_DIM), np.float32)
        if crops:
            self.latency_ms.append(1e3 * (time.perf_counter() - t0))
            self.counters["embedded"] += len(crops)
            self.counters["batches"] += 1
        per_msg: dict[int, dict[int, np.ndarray]] = {}
        for (mi, ci), e in zip(owners, embs, strict=True):
            per_msg.setdefault(mi, {})[ci] = e
        for mi, msg in enumerate(self.queue):
            got = per_msg.get(mi, {})
            order = sorted(got)
            # A track's row pointed at its crop; it now points at that crop's embedding (-1: none or dropped).
            remap = {ci: k for k, ci in enumerate(order)}
            tracks = tuple(replace(t, row=remap.get(t.row, -1)) for t in msg.tracks)
            arr = np.stack([got[ci] for ci in order]) if order else np.zeros((0, EMBEDDING_DIM), np.float32)
            jpegs = tuple(crop_jpeg(msg.crops[ci]) for ci in order) if self.with_jpegs else None
            self.send(EmbeddingsMsg(msg.camera_id, msg.frame_index, msg.ts, tracks, arr.astype(np.float32), jpegs,
                                    wall_ts=msg.wall_ts, live=msg.live))
        self.queue.clear()
        self.queued_crops = 0
