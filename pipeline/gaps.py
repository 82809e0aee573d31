"""Boxes for the frames a tracked person was missed on, drawn after the run for ``--tracks-out`` and ``--save-video``.

A person the detector misses for a few frames is mostly someone hidden behind another (on the crowded terrace1 clip
61 % of the people more than 30 % covered are detected, against 96 % of those in the clear), and the pipeline knows
they are still there:

- within the tracker's own buffer (``detector.lost_timeout_s``), because the tracker keeps a lost track that long
  and the matcher continues an identity across two tracks of one camera;
- for longer, on the frames where another calibrated camera sees the same identity standing inside this camera's
  image: the other view proves the person is in this view, only hidden or missed.

On those frames a box is drawn on the straight line between the person's box before and after the gap (placing it
at the other view's ground position projected back was measured worse: one person's feet from two views lie about
20 cm apart on terrace1, enough to lose IoU 0.5 on a small box). Filled boxes carry confidence 0, which tells them
from detections. Nothing is filled before a person's first or after their last sighting in a camera: walking out
of view and being hidden look alike there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reid.identity.geometry import Homography, foot_points

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

Rows = list[list[float]]  # [track_id, x1, y1, x2, y2, conf] per tracked person on one frame


@dataclass(frozen=True)
class TrackLog:
    """One camera's track log, read in one pass (``pipeline.tracks_out.read_track_log``): the rows of every frame
    the detector ran on, and each of those frames' video time (its start offset included)."""

    boxes: dict[int, Rows]
    times: dict[int, float]


def fill_gaps(boxes: Mapping[int, Rows], label: Callable[[int], int | None], max_missed: int,
              in_view: Callable[[int, int], bool] | None = None) -> dict[int, Rows]:
    """``boxes`` (frame index -> rows, every frame the detector ran on) with a row added on each frame where a
    person, as ``label`` groups the rows by track id (None: left alone), was missed between two sightings: on
    every missed frame of a gap of at most ``max_missed`` detector frames, and on the missed frames of a longer gap
    where ``in_view(person, frame)`` holds. The box is interpolated linearly, carries the earlier row's track id
    and confidence 0."""
    frames = sorted(boxes)
    position = {f: i for i, f in enumerate(frames)}
    sightings: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for f in frames:
        for row in boxes[f]:
            key = label(int(row[0]))
            if key is not None:
                sightings[key].append((f, row))
    out = {f: list(rows) for f, rows in boxes.items()}
    for key, seen in sightings.items():
        twice = {f for (f, _), (g, _) in zip(seen, seen[1:], strict=False) if f == g}
        for (f, a), (g, b) in zip(seen, seen[1:], strict=False):
            if f in twice or g in twice:  # two tracks of one person at once: which line to follow is unknown
                continue
            missed = frames[position[f] + 1:position[g]]
            if len(missed) > max_missed:
                if in_view is None:
                    continue
                missed = [m for m in missed if in_view(key, m)]
            for m in missed:
                w = (m - f) / (g - f)
                out[m].append([a[0], *(a[k] + w * (b[k] - a[k]) for k in range(1, 5)), 0.0])
    return out


@dataclass(frozen=True)
class View:
    """One camera as the filler sees it: the tracker's buffer, the detector frames' spacing, and with
    calibration its homography and image size."""

    max_missed: int  # the tracker's buffer in detector frames
    interval_s: float  # between two frames the detector ran on
    homography: Homography | None = None
    size: tuple[int, int] | None = None  # width, height in pixels


class GapFiller:
    """Fills each global identity's gaps in each camera (:func:`fill_gaps`), with the other calibrated views as
    proof of presence for gaps longer than the tracker's buffer."""

    def __init__(self, views: Mapping[str, View]):
        self.views = dict(views)

    @classmethod
    def from_config(cls, config: PipelineConfig) -> GapFiller:
        """The views of a config's cameras (frame sizes read from the recorded sources, video files and image
        folders; a live source is not opened again to measure it, and gets no cross-view filling)."""
        from detectors.tracking import buffer_frames
        from pipeline.sources import detect_rate, probe_size

        views = {}
        for cam in config.cameras:
            rate = detect_rate(cam)
            h = cam.ground()
            size = probe_size(cam.source) if h is not None and not cam.is_live else None
            views[cam.id] = View(buffer_frames(config.detector.lost_timeout_s, rate), 1.0 / rate,
                                 h if size is not None else None, size)
        return cls(views)

    def fill(self, camera_id: str, logs: Mapping[str, TrackLog],
             label: Callable[[str, int], int | None]) -> dict[int, Rows]:
        """``logs[camera_id]``'s boxes with their gaps filled; ``logs`` holds every camera's track log (cameras
        are lined up by their frames' times) and ``label(camera, track_id)`` gives a track's global identity."""
        view = self.views[camera_id]
        seen = self._seen_from_elsewhere(camera_id, logs, label)
        # Two cameras' detector frames fall at different moments: a sighting counts for the nearest frame here.
        tolerance = max((v.interval_s for v in self.views.values()), default=view.interval_s) / 2
        here = logs[camera_id].times

        def in_view(person: int, frame: int) -> bool:
            at, t = seen.get(person), here.get(frame)
            if at is None or t is None:
                return False
            i = int(np.searchsorted(at, t))
            return any(abs(at[j] - t) <= tolerance for j in (i - 1, i) if 0 <= j < len(at))

        return fill_gaps(logs[camera_id].boxes, lambda t: label(camera_id, t), view.max_missed, in_view)

    def _seen_from_elsewhere(self, camera_id: str, logs: Mapping[str, TrackLog],
                             label: Callable[[str, int], int | None]) -> dict[int, np.ndarray]:
        """Per identity, the sorted video times at which another calibrated camera detected it standing inside
        ``camera_id``'s image (its feet projected through the ground plane)."""
        here = self.views[camera_id]
        if here.homography is None or here.size is None:
            return {}
        to_image = np.linalg.inv(here.homography.matrix)
        width, height = here.size
        seen: dict[int, list[float]] = defaultdict(list)
        for other, view in self.views.items():
            if other == camera_id or view.homography is None or other not in logs:
                continue
            for frame, rows in logs[other].boxes.items():
                t = logs[other].times.get(frame)
                if t is None:
                    continue
                detected = [r for r in rows if (r[5] if len(r) > 5 else 1.0) > 0]
                people = [label(other, int(r[0])) for r in detected]
                keep = [i for i, p in enumerate(people) if p is not None]
                if not keep:
                    continue
                ground, ok = view.homography.project(foot_points(np.array([detected[i][1:5] for i in keep])))
                image = np.c_[ground, np.ones(len(ground))] @ to_image.T
                with np.errstate(divide="ignore", invalid="ignore"):
                    uv = image[:, :2] / image[:, 2:3]
                _, on_floor = here.homography.project(uv)  # a ground point behind this camera has no image
                inside = ok & on_floor & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
                for i, k in enumerate(keep):
                    if inside[i]:
                        seen[people[k]].append(t)
        return {p: np.sort(np.asarray(ts)) for p, ts in seen.items()}
