"""The supervisor's record of the identity events it receives, bounded however long a live stream runs.

Three uses, three stores:
- the latest events in memory (a deque of at most ``keep`` events) for tests and for a look at a running
  pipeline;
- every event of the cameras ``--save-video`` renders (recorded video files, whose streams end, so the file
  ends too) spilled to a JSONL file in the run directory and read back for rendering after the run: the
  videos of a full replay label every track, however many events the run made;
- the cameras each global id was seen in, for the status line and the run summary, kept for the ``keep_ids``
  identities seen most recently (the identity store expires old identities as well).

``--events-out`` adds a JSONL copy of every event, written as it arrives.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline.events import MOVED, NEW

log = logging.getLogger(__name__)

KEEP_EVENTS = 10_000
KEEP_IDENTITIES = 100_000


class EventRecorder:
    """Records the identity events of one run (see the module docstring for what is kept where)."""

    def __init__(self, spill_path: Path, spill_cameras: set[str], copy_to: Path | None = None,
                 keep: int = KEEP_EVENTS, keep_ids: int = KEEP_IDENTITIES) -> None:
        self.spill_path = spill_path
        self.spill_cameras = spill_cameras
        self.copy_to = copy_to
        self.recent: deque[dict] = deque(maxlen=keep)
        self.count = 0
        self.identities: OrderedDict[int, set[str]] = OrderedDict()  # global id -> cameras, most recent last
        self.keep_ids = keep_ids
        self._spill: IO[str] | None = None
        self._copy: IO[str] | None = None

    def open(self) -> None:
        """Start the files (truncating those of an earlier run in the same directory)."""
        self._spill = open(self.spill_path, "w")
        if self.copy_to:
            self.copy_to.parent.mkdir(parents=True, exist_ok=True)
        self._copy = open(self.copy_to, "w") if self.copy_to else None

    def close(self) -> None:
        for f in (self._spill, self._copy):
            if f is not None:
                f.close()
        self._spill = self._copy = None

    def record(self, event: dict) -> None:
        self.recent.append(event)
        self.count += 1
        gid = event.get("global_id")
        if gid is not None:
            self.identities.setdefault(gid, set()).add(event["camera_id"])
            self.identities.move_to_end(gid)
            if len(self.identities) > self.keep_ids:
                self.identities.popitem(last=False)
        line = json.dumps(event) + "\n"
        if self._spill is not None and event.get("camera_id") in self.spill_cameras:
            self._spill.write(line)
        if self._copy is not None:
            self._copy.write(line)
            self._copy.flush()
        if event["kind"] in (NEW, MOVED):
            log.debug("event %s", event)

    @property
    def multi_camera(self) -> int:
        """Identities (of those kept) seen in more than one camera."""
        return sum(len(c) > 1 for c in self.identities.values())

    def spilled(self) -> Iterator[dict]:
        """The spilled events in arrival order, read back from the file (flushed first); a line cut short (a
        full disk) is skipped with a warning."""
        if self._spill is not None:
            self._spill.flush()
        if not self.spill_path.is_file():
            return
        with open(self.spill_path) as f:
            for n, line in enumerate(f, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: unreadable event line skipped", self.spill_path, n)
