"""Embed stage: HA-CNN embeddings of the selected crops, batched dynamically across cameras.

Crops accumulate until ``batch_size`` are waiting or the oldest has waited ``max_wait_ms``; then one call to
the embedder (TensorRT, ONNX Runtime or PyTorch, see trt_engines) embeds them all, and each input message goes
on with its embeddings attached. A crop that cannot be embedded (empty, NaN, wrong layout) is dropped and
counted; its track's state still goes through.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pipeline.messages import CROPS, EMBEDDINGS, END, Message
from pipeline.stage import Stage

log = logging.getLogger(__name__)


def crop_problem(crop: np.ndarray) -> str | None:
    if crop.ndim != 3 or crop.shape[2] != 3:
        return f"shape {crop.shape} is not (H, W, 3)"
    if crop.shape[0] < 2 or crop.shape[1] < 2:
        return f"empty crop {crop.shape}"
    if crop.dtype != np.uint8 and not np.isfinite(crop).all():
        return "non-finite values"
    return None


class EmbedStage(Stage):
    name = "embed"
    input = "embed"
    output = "match"

    def setup(self) -> None:
        from trt_engines.embedder import build_embedder

        r = self.config.reid
        self.embedder = build_embedder(r.backend, r.precision, r.weights, device=r.device, max_batch=r.batch_size,
                                       int8_onnx_path=r.int8_onnx)
        log.info("embedder: %s", self.embedder.description)
        self.queue: list[Message] = []
        self.queued_crops = 0
        self.oldest = 0.0

    def handle(self, msg: Message) -> None:
        if msg.type == END:
            self.flush()
            self.forward_end(msg["camera_id"])
            return
        if msg.type != CROPS or not isinstance(msg.get("tracks"), list):
            self.counters["unexpected"] += 1
            return
        if not self.queue:
            self.oldest = time.monotonic()
        self.queue.append(msg)
        self.queued_crops += len(msg.arrays)
        if self.queued_crops >= self.config.reid.batch_size:
            self.flush()

    def idle(self) -> None:
        if self.queue and (time.monotonic() - self.oldest) * 1e3 >= self.config.reid.max_wait_ms:
            self.flush()

    def flush(self) -> None:
        if not self.queue:
            return
        crops, owners = [], []
        for mi, msg in enumerate(self.queue):
            for ci, crop in enumerate(msg.arrays):
                problem = crop_problem(crop)
                if problem:
                    self.counters["bad_crops"] += 1
                    log.warning("camera %s frame %s: crop %d dropped (%s)", msg.get("camera_id"),
                                msg.get("frame_index"), ci, problem)
                    continue
                crops.append(crop)
                owners.append((mi, ci))
        t0 = time.perf_counter()
        embs = self.embedder.embed(crops) if crops else np.zeros((0, 1024), np.float32)
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
            remap = {ci: k for k, ci in enumerate(order)}
            tracks = []
            for t in msg["tracks"]:
                ci = t.get("crop", -1)
                t = {**t, "emb": remap.get(ci, -1)} if isinstance(ci, int) else {**t, "emb": -1}
                t.pop("crop", None)
                tracks.append(t)
            arr = np.stack([got[ci] for ci in order]) if order else np.zeros((0, 1024), np.float32)
            header = {k: v for k, v in msg.header.items() if k != "tracks"}
            self.send(EMBEDDINGS, {**header, "tracks": tracks}, [arr.astype(np.float32)])
        self.queue.clear()
        self.queued_crops = 0
