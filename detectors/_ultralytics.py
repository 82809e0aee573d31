"""The one door to ultralytics: its offline switches are set here, before its first import anywhere.

Import ultralytics names from this module, never from ``ultralytics`` directly, so no code path reaches the
package with its defaults (online checks, pip auto-install, chatty logging). Weights are never downloaded:
``PersonDetector`` only hands ultralytics paths that exist. A caller that set these variables keeps its values.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # no DNS probe, no hub/asset downloads
os.environ.setdefault("YOLO_AUTOINSTALL", "False")  # a missing extra is an error, not a pip install at run time
os.environ.setdefault("YOLO_VERBOSE", "False")  # our logging reports what matters

import ultralytics  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.trackers.basetrack import TrackState as STrackState  # noqa: E402
from ultralytics.trackers.bot_sort import BOTSORT  # noqa: E402
from ultralytics.trackers.byte_tracker import BYTETracker, STrack  # noqa: E402
from ultralytics.utils import DEFAULT_CFG_DICT, IterableSimpleNamespace  # noqa: E402

ULTRALYTICS_VERSION: str = ultralytics.__version__
TRACKER_CFG_DIR = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "trackers")
# Ultralytics >= 8.4 spells FP16 export ``quantize=16``; older releases ``half=True``.
FP16_EXPORT_ARGS: dict = {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


__all__ = [
    "BOTSORT",
    "BYTETracker",
    "FP16_EXPORT_ARGS",
    "IterableSimpleNamespace",
    "STrack",
    "STrackState",
    "TRACKER_CFG_DIR",
    "ULTRALYTICS_VERSION",
    "YOLO",
]
