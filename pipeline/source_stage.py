"""Source stage: one camera's frames into the pipeline, at recorded pace, as fast as possible, or live.

Replay (``--replay``) reads recorded files with video time (frame time + the camera's start offset), paces
them at ``speed`` x real time (or not at all with ``max``) and never drops: it blocks while the detector is
behind. Live sources stamp capture time and never block: a frame that finds the queue full is dropped and
counted, and the detector skips to each camera's newest queued frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.messages import FrameMsg
from pipeline.sources import Frame, camera_fps, camera_stride, folder_frames, stream_frames, video_frames
from pipeline.stage import Stage

log = logging.getLogger(__name__)


class SourceStage(Stage):
    name = "source"
    output = "detect"
    drain_on_stop = True  # a stopped source ends its stream: the detect stage must still read that end

    def __init__(self, config, instance: int = 0, camera_id: str = "", replay: bool = False,
                 speed: float | None = 1.0, duration_s: float | None = None, start_frame: int = 0, **options) -> None:
        super().__init__(config, instance, **options)
        self.camera = next(c for c in config.cameras if c.id == camera_id)
        self.replay = replay
        self.speed = speed  # None: as fast as the stages allow
        self.duration_s = duration_s
        self.start_frame = start_frame
        self.last_frame = start_frame - 1

    @property
    def label(self) -> str:
        return f"source:{self.camera.id}"

    def frames(self) -> tuple[Iterator[Frame], float]:
        cam, src = self.camera, self.camera.source
        fps = camera_fps(cam)
        stride = camera_stride(cam, fps)
        if cam.is_live:
            return stream_frames(src, stride, self.stop.is_set, backoff_s=cam.reconnect_backoff_s,
                                 max_ts=self.duration_s, read_timeout_s=cam.read_timeout_s), fps
        path = Path(str(src))
        if path.is_dir():
            return folder_frames(path, stride, self.start_frame, fps, self.duration_s), fps
        return video_frames(path, stride, self.start_frame, fps, self.duration_s), fps

    def run(self) -> None:
        frames, fps = self.frames()
        live = self.camera.is_live or not self.replay
        t_wall0, t_video0 = time.monotonic(), None
        for index, ts, frame in frames:
            if self.stop.is_set():
                break
            if not self.camera.is_live:
                if self.replay:
                    ts += self.camera.start_offset_s
                    if self.speed:  # recorded pace: wait until this frame's moment
                        t_video0 = ts if t_video0 is None else t_video0
                        delay = (ts - t_video0) / self.speed - (time.monotonic() - t_wall0)
                        if delay > 0:
                            self.stop.wait(delay)
                else:  # a file played as if it were a live camera
                    t_video0 = ts if t_video0 is None else t_video0
                    delay = (ts - t_video0) - (time.monotonic() - t_wall0)
                    if delay > 0:
                        self.stop.wait(delay)
                    ts = time.time()
            msg = FrameMsg(self.camera.id, index, ts, frame, wall_ts=time.time(), live=live)
            if not self.send(msg, block=not live):
                if self.stop.is_set():
                    break  # told to stop while the detector's queue was full (it may be gone): not sent
                self.counters["dropped_frames"] += 1  # live: the detector is behind; a camera never waits
                continue
            self.counters["frames"] += 1
            self.last_frame = index
            self.maybe_report()
        self.forward_end(self.camera.id)

    def stats(self) -> dict:
        return {**super().stats(), "camera_id": self.camera.id, "last_frame": self.last_frame}

    def finished(self) -> bool:
        return self.camera.id in self.ended
