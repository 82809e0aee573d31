"""Match stage: embeddings messages into the identity tracker (:mod:`reid.identity.tracker`), identity events out.

Everything that decides identities lives in the tracker; this stage decodes, hands over, and publishes each
outcome as an event with the deployment's next sequence number (kept in Redis, so it continues across restarts).
"""

from __future__ import annotations

import base64
import logging
import time

import numpy as np
import zmq

from pipeline.events import MOVED, NEW, encode_event, make_event
from pipeline.messages import EmbeddingsMsg, EndMsg, Msg
from pipeline.stage import Stage, bind_dir
from reid.identity.tracker import Outcome

log = logging.getLogger(__name__)


class MatchStage(Stage):
    name = "match"
    input = "match"

    def setup(self) -> None:
        from reid.identity.album import Album
        from reid.identity.matcher import Matcher
        from reid.identity.store import IdentityStore
        from reid.identity.tracker import IdentityTracker

        cfg = self.config
        self.store = IdentityStore.from_config(cfg.matcher, self.options.get("redis_url"))
        # A first start is a new run on the store (its detector numbers tracks from 1 again); a restart carries on.
        run = self.store.begin_run(fresh=self.instance == 0)
        if run:
            log.info("identity store: run %d; the identities of earlier runs are kept, their track ids are theirs",
                     run)
        g = cfg.gallery
        self.tracker = IdentityTracker(
            cfg.matcher, Matcher(cfg.matcher, self.store), {c.id: c.ground() for c in cfg.cameras}, cfg.geometry,
            lost_timeout_s=cfg.detector.lost_timeout_s, album=Album.from_config(self.store, g),
            keep_crops=cfg.events_include_crops or g.store_crops, album_max_age_s=g.max_age_s,
            album_max_identities=g.max_identities, run=run)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 1000)
        self.pub.setsockopt(zmq.SNDHWM, 10000)
        endpoint = cfg.endpoint("events")
        bind_dir(endpoint)
        self.guard.bind(self.pub, endpoint, always=True)

    def teardown(self) -> None:
        if hasattr(self, "pub"):
            self.pub.close()
        if hasattr(self, "store"):
            self.store.close()

    def handle(self, msg: Msg) -> None:
        cam = msg.camera_id
        if cam not in self.tracker.homographies:
            self.counters["unknown_camera"] += 1
            return
        if isinstance(msg, EndMsg):
            self.tracker.end_camera(cam)
            self.ended.add(cam)
        elif isinstance(msg, EmbeddingsMsg):
            embs = msg.embeddings
            if len(embs) and embs.shape[1] != self.config.matcher.embedding_dim:
                self.counters["bad_embeddings"] += 1
                log.warning("camera %s: embeddings of shape %s dropped", cam, embs.shape)
                embs = np.zeros((0, self.config.matcher.embedding_dim), np.float32)
            self.tracker.observe(cam, msg.ts, msg.tracks, embs, msg.jpegs, live=msg.live)
            if msg.wall_ts:
                self.latency_ms.append(1e3 * (time.time() - msg.wall_ts))
        else:
            self.counters["unexpected"] += 1
            return
        self.publish(self.tracker.decide())

    def after_turn(self) -> None:
        if self.tracker.live:  # a silent live camera stops holding back decisions as wall time passes
            self.publish(self.tracker.decide())

    def publish(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            extra: dict = {}
            if o.reason is not None:
                extra["reason"] = o.reason
            if self.tracker.homographies[o.camera_id] is not None:
                extra["ground_xy"] = list(o.ground_xy) if o.ground_xy is not None else None
            if self.config.events_include_crops and o.kind in (NEW, MOVED):
                extra["crop_jpeg"] = base64.b64encode(o.crop_jpeg).decode("ascii") if o.crop_jpeg else None
            if o.from_global_id is not None:
                extra["from_global_id"] = o.from_global_id
            if o.part_track_id is not None:
                extra["part_track_id"] = o.part_track_id
            if o.duration_s is not None:
                extra.update(duration_s=o.duration_s, num_crops=o.num_crops, last_seen_ts=o.last_seen_ts)
            event = make_event(o.kind, self.store.next_event_seq(), o.camera_id, o.track_id, o.global_id, o.ts,
                               o.frame_index, list(o.box) if o.box is not None else None, o.similarity,
                               o.from_camera, **extra)
            self.pub.send_multipart(encode_event(event))
            self.counters["events"] += 1
            self.counters[o.kind] += 1

    def stats(self) -> dict:
        """The stage's own counters with the tracker's (matched, deferred, ended tracks...), and the tracker's,
        the matcher's and the store's state (open tracks, identities, decision times, write conflicts)."""
        base = super().stats()
        if hasattr(self, "tracker"):
            tracker = self.tracker.stats()
            base["counters"] = {**base["counters"], **tracker.pop("counters")}  # type: ignore[dict-item]
            base.update(tracker)
        return base
