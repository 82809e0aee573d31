"""Identity events: the product's output, one versioned JSON schema (docs/events.md).

Published on a ZeroMQ PUB socket as two frames, ``[topic, json]``; the topic is the event kind, so a
subscriber can filter on it. ``seq`` counts every event of the deployment (kept in Redis, so it continues
across a restart of the match stage): a subscriber that sees a jump knows it missed events.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any

from reid.identity.records import CORRECTED, ENDED, MOVED, NEW, SEEN, SPLIT

SCHEMA = "reid.identity_event/1"
KINDS = (NEW, SEEN, MOVED, CORRECTED, SPLIT, ENDED)


def track_identities(events: Iterable[dict]) -> dict[tuple[str, int], int]:
    """(camera, track) -> the global identity the events gave that track (the last one, should it change). A part
    of a track split at a swap is a track of its own here (``track_parts`` says which sightings are its)."""
    return {(e["camera_id"], int(e["track_id"])): int(e["global_id"]) for e in events
            if e.get("global_id") is not None and e.get("track_id") is not None and e["kind"] != SPLIT}


def track_parts(events: Iterable[dict]) -> dict[tuple[str, int], tuple[int, int]]:
    """(camera, track) -> (first frame index, part track id) for each track split at a swap (``track.split``): the
    track's sightings from that frame on belong to the part, which the later events name."""
    return {(e["camera_id"], int(e["track_id"])): (int(e["frame_index"]), int(e["part_track_id"])) for e in events
            if e["kind"] == SPLIT}


def make_event(kind: str, seq: int, camera_id: str, track_id: int, global_id: int | None, video_ts: float,
               frame_index: int, box: list[float] | None, similarity: float | None = None,
               from_camera: str | None = None, **extra: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}; valid: {KINDS}")
    event = {
        "schema": SCHEMA,
        "seq": seq,
        "kind": kind,
        "global_id": global_id,
        "camera_id": camera_id,
        "track_id": track_id,
        "video_ts": round(float(video_ts), 4),
        "wall_ts": round(time.time(), 4),
        "frame_index": int(frame_index),
        "box": [round(float(v), 1) for v in box] if box is not None else None,
        "similarity": None if similarity is None or not math.isfinite(similarity) else round(float(similarity), 4),
    }
    if from_camera is not None:
        event["from_camera"] = from_camera
    event.update(extra)
    return event


def encode_event(event: dict[str, Any]) -> list[bytes]:
    return [event["kind"].encode(), json.dumps(event, separators=(",", ":")).encode()]


def decode_event(frames: list[bytes]) -> dict[str, Any]:
    """Parse and check an event; raises ValueError on anything that is not a valid event."""
    if len(frames) != 2:
        raise ValueError(f"an event has 2 frames, got {len(frames)}")
    event = json.loads(frames[1])
    if not isinstance(event, dict) or event.get("schema") != SCHEMA or event.get("kind") not in KINDS:
        raise ValueError("not a reid identity event")
    return event


def deterministic_view(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its wall-clock time: equal for two replays of the same input and config."""
    return {k: v for k, v in event.items() if k != "wall_ts"}
