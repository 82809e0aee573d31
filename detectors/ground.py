"""Ground-plane motion in the per-camera association of a calibrated camera: no match that would move a person
faster than anyone walks.

Why: at a crossing, two people's boxes overlap in the image while their feet stand metres apart on the ground,
one behind the other; the IoU cost cannot tell them apart, and a swap there moves the track's feet by the distance
between the two people in one detector frame. With the camera's homography the tracker knows how far a match would
move a track on the ground, and ``geometry`` says how far is too far: more than ``different_place`` (two people's
feet at least this far apart are two people) plus ``max_speed`` times the time since the track was last seen.

Feet are only where a box ends, so two margins come first. A detection that overlaps another one (IoU above
``CLEAN_IOU``, 0.1) may have its feet hidden and is never vetoed. The foot point of a clean detection lies within
about a tenth of the person's height of the annotated one (terrace1: 95th percentile 0.08 and 0.09 of the box
height on the two clips), and a pixel far from the camera is worth more ground than one near it: so each box's
own tenth of its height, taken through the homography where the box stands, widens the limit. Without that
margin the gate split real tracks of people far from the camera (on the same detections, the tracker-alone IDF1
of the sparse clip's second view fell from 0.64 to 0.56);
with it, no view lost anything (benchmarks/mtmc_accuracy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.appearance import CLEAN_IOU
from reid.identity.geometry import Homography, box_iou, foot_points

FOOT_SLACK = 0.1  # of a box's height: how far a clean detection's bottom edge may sit from the person's feet


@dataclass(frozen=True)
class GroundGate:
    """Vetoes track-detection pairs of one calibrated camera that no walk could join (module docstring)."""

    homography: Homography
    different_place: float  # ground units: feet at least this far apart are two people
    max_speed: float  # ground units per second

    def veto(self, dists: np.ndarray, track_xyxy: np.ndarray, seconds_since_seen: np.ndarray,
             det_xyxy: np.ndarray) -> np.ndarray:
        """``dists`` (tracks x detections, the association cost; 1 = no match) with the impossible pairs set to 1.
        ``track_xyxy``: each track's predicted box; ``seconds_since_seen``: video time since it was last matched
        (infinite: never refused)."""
        if not dists.size:
            return dists
        track_at, track_slack, track_ok = self._ground(np.asarray(track_xyxy, np.float64))
        det_at, det_slack, det_ok = self._ground(np.asarray(det_xyxy, np.float64))
        if len(det_xyxy) > 1:
            overlap = box_iou(det_xyxy, det_xyxy)
            np.fill_diagonal(overlap, 0.0)
            det_ok &= overlap.max(axis=1) <= CLEAN_IOU
        moved = np.linalg.norm(track_at[:, None] - det_at[None], axis=2)
        dt = np.asarray(seconds_since_seen, np.float64)[:, None]
        limit = self.different_place + self.max_speed * dt + track_slack[:, None] + det_slack[None]
        impossible = track_ok[:, None] & det_ok[None] & (moved > limit)
        return np.where(impossible, 1.0, dists)

    def _ground(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground positions of the boxes' feet, the ground length of FOOT_SLACK of each box's height there, and
        which boxes have both."""
        feet = foot_points(xyxy)
        at, ok = self.homography.project(feet)
        raised = feet - np.c_[np.zeros(len(feet)), FOOT_SLACK * (xyxy[:, 3] - xyxy[:, 1])]
        up, ok_up = self.homography.project(raised)
        slack = np.linalg.norm(up - at, axis=1)
        ok &= ok_up
        return np.where(ok[:, None], at, 0.0), np.where(ok, slack, 0.0), ok
