"""Per-camera tracking with ultralytics' ByteTrack or BoT-SORT, track life-cycle events and best-crop selection.

The trackers are used directly (not through ``model.track``'s predictor callbacks): detections go in as a
small results-like object and ``update()`` returns rows ``[x1, y1, x2, y2, track_id, score, cls, idx]``
for confirmed, currently tracked objects, ``idx`` being the row of the detection it matched. This module
turns those rows into per-camera track ids, STARTED/ACTIVE/LOST/ENDED events, and a few well-chosen crops
per track for the embedder, instead of every crop of every frame.

Track ids are per camera and never reused on it: ultralytics' ``BaseTrack`` hands out ids from a counter
shared by every tracker in the process (8.4.19x gives each tracker its own, older releases do not, and a new
tracker's ``reset_id()`` rewinds the shared one), so each tracker here numbers its tracks itself and this
module maps them to a camera-wide sequence that survives ``flush()``.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from detectors._ultralytics import BOTSORT, TRACKER_CFG_DIR, BYTETracker, IterableSimpleNamespace, STrack, STrackState
from detectors.appearance import CLEAN_IOU, TWO_PEOPLE_MAX_IOU, AppearanceConfig, SimilarityScale
from detectors.crops import QualityConfig, assess_quality, crop_views
from detectors.ground import GroundGate
from detectors.types import Detections, TrackCrop, TrackState
from reid.identity.geometry import box_iou

log = logging.getLogger(__name__)

TrackerKind = Literal["bytetrack", "botsort"]


class TrackerConfigError(ValueError):
    """Unknown tracker kind or override key, or a forbidden setting; the message names it."""


# ---------------------------------------------------------------------------------------------------------------------
# tracker construction
# ---------------------------------------------------------------------------------------------------------------------


class _OwnIds:
    """Mixin: tracks take ids from their tracker's own counter instead of ``BaseTrack``'s process-wide one."""

    def _own_ids_init(self) -> None:
        self._own_counter = itertools.count(1)

    def _next_own_id(self) -> int:
        return next(self._own_counter)

    def init_track(self, *args: Any, **kwargs: Any) -> list:
        tracks = super().init_track(*args, **kwargs)  # type: ignore[misc]
        for t in tracks:
            t.next_id = self._next_own_id  # instance attribute shadows the static BaseTrack.next_id
        return tracks


class _Gated:
    """Mixin: the association cost of a tracker with a :class:`GroundGate` (``self.gate``, None: none) loses the
    pairs that would move a person faster than anyone walks.

    The time since a track was last matched is taken from the frames' own times (:meth:`stamp`, called before
    each update), not from the update count: a live camera drops frames when the detector falls behind.
    ByteTrack's second round (low-score detections, below ``track_high_thresh``) matches on IoU alone, ungated;
    with ``detector.conf`` above that threshold (0.35 against 0.25 as shipped) it receives no detections.
    """

    gate: GroundGate | None = None
    _frame_ts: dict[int, float] | None = None  # tracker frame id -> video time

    def stamp(self, ts: float) -> None:
        """The video time of the frame the next update is for; the times of frames no live track can still
        refer to are dropped."""
        if self._frame_ts is None:
            self._frame_ts = {}
        times = self._frame_ts
        now = self.frame_id + 1  # type: ignore[attr-defined]
        times[now] = ts
        for frame in [f for f in times if f < now - self.max_frames_lost - 1]:  # type: ignore[attr-defined]
            del times[frame]

    def get_dists(self, tracks: list, detections: list) -> np.ndarray:
        dists = super().get_dists(tracks, detections)  # type: ignore[misc]
        now = (self._frame_ts or {}).get(self.frame_id)  # type: ignore[attr-defined]
        if now is None or not len(tracks) or not len(detections):
            return dists
        return self.vetoed(dists, tracks, np.array([t.xyxy for t in tracks]), np.array([d.xyxy for d in detections]),
                           now)

    def vetoed(self, dists: np.ndarray, tracks: list, track_xyxy: np.ndarray, det_xyxy: np.ndarray,
               now: float) -> np.ndarray:
        """``dists`` with the pairs the gate refuses at video time ``now`` set to 1 (no gate: unchanged)."""
        if self.gate is None:
            return dists
        times = self._frame_ts or {}
        since = [now - times.get(t.frame_id, -math.inf) for t in tracks]  # unknown: never refused
        return self.gate.veto(dists, track_xyxy, np.array(since), det_xyxy)


class _ByteTrack(_OwnIds, _Gated, BYTETracker):
    def __init__(self, args: Any, **kwargs: Any):
        self._own_ids_init()
        super().__init__(args, **kwargs)


class _BotSort(_OwnIds, _Gated, BOTSORT):
    def __init__(self, args: Any, **kwargs: Any):
        self._own_ids_init()
        super().__init__(args, **kwargs)


class AppearanceByteTrack(BYTETracker):
    """ultralytics' ByteTrack whose first and unconfirmed associations mix appearance into the IoU cost.

    ``update(results, img, feats, embedded=...)`` takes one unit embedding per detection row (``feats``,
    ultralytics' own argument for per-detection features) and which rows were embedded at all: only the detections
    whose association appearance can decide are (:meth:`wanted`); a pair with a detection left out keeps ByteTrack's
    IoU cost. A track's appearance (``track.appearance``) starts from its first embedded detection and follows its
    clean embedded detections (nothing else overlapping) with exponential smoothing, so the person in front at a
    crossing does not leak into the track behind.
    """

    def __init__(self, args: Any, appearance: AppearanceConfig, **kwargs: Any):
        super().__init__(args, **kwargs)
        self.appearance = appearance
        self.scale = SimilarityScale(appearance)
        self._feats: np.ndarray | None = None
        self._embedded: np.ndarray | None = None
        self._last_full_ts = -math.inf  # video time of the last frame whose every detection was embedded

    def wanted(self, xyxy: np.ndarray, conf: np.ndarray, ts: float) -> np.ndarray:
        """Which of this frame's detections (``xyxy``, ``conf``, at video time ``ts``) appearance can decide
        something about, given the tracks as the next :meth:`update` will predict them.

        A detection is left out only when it overlaps exactly one confirmed, tracked track that has an appearance,
        that track overlaps no other detection, and their IoU cost is low enough that no appearance cost could push
        the pair over ByteTrack's match threshold: they pair up whatever the two look like, as they would with the
        embedding. Everything else is embedded: detections that touch several tracks or share one (a crossing),
        a pair whose IoU is weak (appearance may keep it, or refuse it), a lost track's (a re-find, where a track is
        most often found on someone else), a track's without appearance yet, a new track's first. Every
        ``appearance.refresh_s`` of video the whole frame is embedded, which keeps every track's appearance and the
        similarity scale's samples current; ``refresh_s`` 0 embeds every detection.
        """
        n = len(xyxy)
        if n == 0 or self.appearance.refresh_s == 0 or ts - self._last_full_ts >= self.appearance.refresh_s \
                or self.args.match_thresh >= 1:  # at 1 or more, boxes that do not touch can pair: no bound holds
            return np.ones(n, bool)
        confirmed = [t for t in self.tracked_stracks if t.is_activated]
        unconfirmed = [t for t in self.tracked_stracks if not t.is_activated]
        known = {t.track_id for t in confirmed}
        pool = confirmed + [t for t in self.lost_stracks if t.track_id not in known]  # as update() pools them
        tracks = pool + unconfirmed
        if not tracks:
            return np.ones(n, bool)
        boxes = np.array([t.xyxy for t in unconfirmed]).reshape(-1, 4)
        if pool:  # the Kalman step the update will take (lost tracks keep their size), on copies
            means = np.array([t.mean for t in pool])
            means[[t.state != STrackState.Tracked for t in pool], 7] = 0
            means, _ = STrack.shared_kalman.multi_predict(means, np.array([t.covariance for t in pool]))
            w = means[:, 2] * means[:, 3]
            predicted = np.stack([means[:, 0] - w / 2, means[:, 1] - means[:, 3] / 2,
                                  means[:, 0] + w / 2, means[:, 1] + means[:, 3] / 2], axis=1)
            boxes = np.concatenate([predicted, boxes])
        det_xyxy = np.asarray(xyxy, dtype=np.float64)
        iou = box_iou(boxes, det_xyxy)
        touch = iou > 0  # the pairs get_dists lets appearance re-rank
        cost = 1 - iou * np.asarray(conf, dtype=np.float64)[None, :] if self.args.fuse_score else 1 - iou
        cost = self.vetoed(cost, tracks, boxes, det_xyxy, ts)  # a refused pair's detection may start a track
        w = self.appearance.weight
        # 1e-6: a margin for the float32 costs ByteTrack computes, against this float64 bound
        sure = cost < (self.args.match_thresh - w) / (1 - w) - 1e-6 if w < 1 else np.zeros_like(touch)
        plain = np.array([t.state == STrackState.Tracked and t.is_activated
                          and getattr(t, "appearance", None) is not None for t in tracks])
        per_det, per_track = touch.sum(axis=0), touch.sum(axis=1)
        alone = (per_det == 1) & (touch & sure & (plain & (per_track == 1))[:, None]).any(axis=0)
        return ~alone

    def vetoed(self, dists: np.ndarray, tracks: list, track_xyxy: np.ndarray, det_xyxy: np.ndarray,
               now: float) -> np.ndarray:
        """The pairs of ``dists`` nothing refuses: all of them (a ground gate refuses some: :class:`_Gated`)."""
        return dists

    def update(self, results: Any, img: np.ndarray | None = None, feats: np.ndarray | None = None,
               embedded: np.ndarray | None = None, ts: float | None = None, **kwargs: Any) -> np.ndarray:
        """``embedded``: which rows of ``feats`` were embedded (None: all); ``ts``: the frame's video time."""
        if feats is None or len(feats) != len(results):
            raise ValueError(f"appearance tracker: need one embedding per detection, got "
                             f"{None if feats is None else len(feats)} for {len(results)}")
        self._feats = np.asarray(feats, dtype=np.float32)
        self._embedded = np.ones(len(feats), bool) if embedded is None else np.asarray(embedded, bool)
        if ts is not None and len(feats) and self._embedded.all():
            self._last_full_ts = ts
        # ultralytics' native-ReID path would hand ``feats`` to init_track as features; ours keeps them aside.
        out = super().update(results, img)
        self._learn(np.asarray(results.xyxy, dtype=np.float64))
        return out

    def get_dists(self, tracks: list, detections: list) -> np.ndarray:
        from ultralytics.trackers.utils import matching

        dists = matching.iou_distance(tracks, detections)
        if self.args.fuse_score:
            dists = matching.fuse_score(dists, detections)
        if not len(tracks) or not len(detections) or self._feats is None or self.appearance.weight == 0:
            return dists
        rows = [i for i, t in enumerate(tracks) if getattr(t, "appearance", None) is not None]
        if not rows:
            return dists
        idx = [int(d.idx) for d in detections]
        apps = np.stack([tracks[i].appearance for i in rows])
        cost = self.scale.cost(apps @ self._feats[idx].T)
        w = self.appearance.weight
        sub = dists[rows]
        # Appearance re-ranks the pairs whose boxes overlap at all; it never matches boxes that do not touch, and a
        # detection left unembedded keeps the IoU cost.
        mixed = (sub < 1.0) & self._embedded[idx][None, :]
        dists[rows] = np.where(mixed, (1 - w) * sub + w * cost, sub)
        return dists

    def _learn(self, xyxy: np.ndarray) -> None:
        """Update the appearance of the tracks matched in this frame, and the similarity scale's samples."""
        feats, embedded = self._feats, self._embedded
        assert feats is not None and embedded is not None
        overlap = box_iou(xyxy, xyxy) if len(xyxy) else np.zeros((0, 0))
        np.fill_diagonal(overlap, 0.0)
        clean = overlap.max(axis=1) <= CLEAN_IOU if len(xyxy) > 1 else np.ones(len(xyxy), bool)
        usable = embedded & feats.any(axis=1)  # a zero row: left out, or a crop that could not be embedded
        same = []
        a = self.appearance.smoothing
        for t in self.tracked_stracks:
            i = int(t.idx)
            if t.frame_id != self.frame_id or not usable[i]:
                continue
            e = feats[i]
            old = getattr(t, "appearance", None)
            if old is None:
                t.appearance = e.copy()
            elif clean[i]:
                same.append(float(old @ e))
                mixed = a * old + (1 - a) * e
                t.appearance = (mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32)
        iu = np.triu_indices(len(xyxy), k=1)
        apart = (overlap[iu] < TWO_PEOPLE_MAX_IOU) & usable[iu[0]] & usable[iu[1]]
        different = (feats @ feats.T)[iu][apart] if len(xyxy) > 1 else np.zeros(0)
        self.scale.observe(np.asarray(same), different)


class _AppearanceTrack(_OwnIds, _Gated, AppearanceByteTrack):
    def __init__(self, args: Any, appearance: AppearanceConfig, **kwargs: Any):
        self._own_ids_init()
        super().__init__(args, appearance, **kwargs)


_TRACKERS: dict[str, type] = {"bytetrack": _ByteTrack, "botsort": _BotSort}
_BASES: dict[str, type] = {"bytetrack": BYTETracker, "botsort": BOTSORT}


def tracker_args(kind: str, overrides: Mapping[str, Any] | None = None) -> IterableSimpleNamespace:
    """Settings of ``kind`` from ultralytics' ``cfg/trackers/<kind>.yaml`` with ``overrides`` applied.

    Unknown keys are rejected with the closest valid ones. BoT-SORT's own ReID stays off: HA-CNN embeds the
    crops downstream, and a second appearance model per camera would cost more than the whole detector.
    """
    if kind not in _TRACKERS:
        raise TrackerConfigError(f"tracker kind must be one of {sorted(_TRACKERS)}, got {kind!r}")
    cfg = yaml.safe_load((Path(TRACKER_CFG_DIR) / f"{kind}.yaml").read_text())
    for key, value in (overrides or {}).items():
        if key not in cfg or key == "tracker_type":
            close = difflib.get_close_matches(key, [k for k in cfg if k != "tracker_type"], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(cfg))}"
            raise TrackerConfigError(f"{kind} tracker: unknown setting {key!r}{hint}")
        cfg[key] = value
    if cfg.get("with_reid"):
        raise TrackerConfigError(f"{kind} tracker: with_reid must stay False (HA-CNN does re-identification)")
    if int(cfg["track_buffer"]) < 1:
        raise TrackerConfigError(f"{kind} tracker: track_buffer must be >= 1 frame, got {cfg['track_buffer']}")
    return IterableSimpleNamespace(**cfg)


def build_tracker(kind: str, args: IterableSimpleNamespace, appearance: AppearanceConfig | None = None,
                  gate: GroundGate | None = None) -> Any:
    """A fresh tracker of ``kind`` whose tracks are numbered by the tracker itself (see ``_OwnIds``); with an
    enabled ``appearance`` (ByteTrack only), the appearance-aware ByteTrack of :mod:`detectors.appearance`; with
    ``gate``, no match a walk could not make (:mod:`detectors.ground`)."""
    # Releases before 8.4.19x scale track_buffer by frame_rate / 30; 30 keeps it a plain frame count, as here.
    takes_rate = "frame_rate" in inspect.signature(_BASES[kind].__init__).parameters
    rate = {"frame_rate": 30} if takes_rate else {}
    if appearance is not None and appearance.enabled:
        if kind != "bytetrack":
            raise TrackerConfigError(f"appearance in the association needs the bytetrack tracker, not {kind!r} "
                                     "(BoT-SORT has its own ReID fusion); disable detector.appearance for it")
        tracker = _AppearanceTrack(args, appearance, **rate)
    else:
        tracker = _TRACKERS[kind](args, **rate)
    tracker.gate = gate
    return tracker


class _TrackerInput:
    """The results-like object the ultralytics trackers read: ``conf``, ``cls``, ``xyxy``, ``xywh``, masking."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray):
        self.xyxy = xyxy
        self.conf = conf
        self.cls = np.zeros(len(conf), dtype=np.float32)
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _TrackerInput:
        return _TrackerInput(self.xyxy[index], self.conf[index])


# ---------------------------------------------------------------------------------------------------------------------
# best-crop selection
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Kept:
    crop: TrackCrop  # owns its pixels (materialized): it outlives the frame it came from
    sent: bool = False


@dataclass
class _Selection:
    kept: list[_Kept] = field(default_factory=list)
    sent: int = 0
    last_sent_ts: float = -math.inf
    best_sent_quality: float = -1.0
    crossings_sent: int = 0
    last_crossing_ts: float = -math.inf


class BestCropSelector:
    """Chooses which crops of each track go to the embedder: few, good, and spread over the track's life.

    Per track it keeps the ``max_crops_per_track`` best crops by quality, no two closer than ``min_gap_s``
    seconds of video (a person standing still gives near-identical crops; spread gives the matcher views from
    several moments). ``offer()`` says whether a crop goes out now: the first one always (the matcher needs
    something at once), later ones when kept (best within ``min_gap_s`` around it), at least ``min_gap_s`` after
    the last sent, and better than every sent one by ``min_improvement``.
    The gap is in video time, not frames: frame indices count the source's frames, not the detector's, and a
    gap in either would change with the frame or detection rate.
    ``finish()`` returns the best kept crop not sent yet, if it beats the sent ones. At most
    ``max_crops_per_track`` are sent in all, one of them kept for ``finish()``.
    With ``crossing_crops``, the first clear crop after a crossing (``offer(..., crossing_exit=True)``) is sent too,
    up to that many per track, ``min_gap_s`` apart, besides the others: a tracker may come out of a crossing on
    another person, and the identity stage can only split the track there (:mod:`reid.identity.swaps`) and match
    what follows if it has a crop of it.
    Kept crops are copies: a view would pin its whole frame and break if the source reuses frame buffers.
    """

    def __init__(self, max_crops_per_track: int = 4, min_gap_s: float = 1.0, min_improvement: float = 0.05,
                 crossing_crops: int = 0):
        if max_crops_per_track < 1 or min_gap_s < 0 or min_improvement < 0 or crossing_crops < 0:
            raise ValueError("need max_crops_per_track >= 1, min_gap_s >= 0, min_improvement >= 0 and "
                             "crossing_crops >= 0")
        self.max_crops_per_track = max_crops_per_track
        self.min_gap_s = min_gap_s
        self.min_improvement = min_improvement
        self.crossing_crops = crossing_crops
        self._tracks: dict[int, _Selection] = {}

    def offer(self, crop: TrackCrop, crossing_exit: bool = False) -> bool:
        """Consider the crop of a track in the current frame; True when it should be sent for embedding now.
        ``crossing_exit``: the track's box is clear of every other detection, and was not in its previous frame."""
        sel = self._tracks.setdefault(crop.track_id, _Selection())
        if (crossing_exit and crop.has_crop and sel.sent and sel.crossings_sent < self.crossing_crops
                and crop.ts - sel.last_crossing_ts >= self.min_gap_s):
            sel.crossings_sent += 1
            sel.last_crossing_ts = crop.ts
            return True
        kept = self._keep(sel, crop)
        live_budget = max(1, self.max_crops_per_track - 1)
        send = sel.sent == 0 or (
            kept is not None  # the best crop within min_gap_s of this one
            and sel.sent < live_budget
            and crop.ts - sel.last_sent_ts >= self.min_gap_s
            and crop.quality >= sel.best_sent_quality + self.min_improvement
        )
        if send:
            sel.sent += 1
            sel.last_sent_ts = crop.ts
            sel.best_sent_quality = max(sel.best_sent_quality, crop.quality)
            if kept is not None:
                kept.sent = True
        return send

    def _keep(self, sel: _Selection, crop: TrackCrop) -> _Kept | None:
        if not crop.has_crop:
            return None
        near = [k for k in sel.kept if abs(k.crop.ts - crop.ts) < self.min_gap_s]
        if near:
            if crop.quality <= max(k.crop.quality for k in near):
                return None
            sel.kept = [k for k in sel.kept if k not in near]
        elif len(sel.kept) >= self.max_crops_per_track:
            worst = min(sel.kept, key=lambda k: k.crop.quality)
            if crop.quality <= worst.crop.quality:
                return None
            sel.kept.remove(worst)
        entry = _Kept(crop.materialized())
        sel.kept.append(entry)
        return entry

    def kept(self, track_id: int) -> list[TrackCrop]:
        """The track's kept crops, best first (owned copies)."""
        sel = self._tracks.get(track_id)
        return [k.crop for k in sorted(sel.kept, key=lambda k: -k.crop.quality)] if sel else []

    def finish(self, track_id: int) -> TrackCrop | None:
        """Forget the track; returns its best unsent kept crop when it beats every sent one by ``min_improvement``."""
        sel = self._tracks.pop(track_id, None)
        if sel is None or sel.sent >= self.max_crops_per_track:
            return None
        unsent = [k.crop for k in sel.kept if not k.sent]
        if not unsent:
            return None
        best = max(unsent, key=lambda c: c.quality)
        return best if best.quality >= sel.best_sent_quality + self.min_improvement else None


# ---------------------------------------------------------------------------------------------------------------------
# per-camera tracker
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Track:
    track_id: int
    raw_id: int
    lost: bool
    xyxy: np.ndarray
    conf: float
    crowded: bool = False  # its latest box overlapped another detection (CLEAN_IOU)


def _unit_rows(embeddings: np.ndarray | None, n: int, camera_id: str) -> np.ndarray:
    """Row-normalised float32 embeddings; a zero row (a crop that could not be embedded) stays zero, which makes
    its detection look like nobody the tracker knows."""
    if embeddings is None or len(embeddings) != n or (n and np.asarray(embeddings).ndim != 2):
        got = None if embeddings is None else np.asarray(embeddings).shape
        raise ValueError(f"{camera_id}: the appearance tracker needs one embedding per detection ({n}), got {got}")
    e = np.asarray(embeddings, dtype=np.float32)
    if n == 0:
        return e.reshape(0, e.shape[-1] if e.ndim == 2 else 0)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return np.where(norms > 1e-12, e / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def buffer_frames(lost_timeout_s: float, frame_rate: float) -> int:
    """How many tracker updates (frames the detector ran on) a lost track is kept for: ``lost_timeout_s`` at
    ``frame_rate``, at least one."""
    return max(1, math.ceil(lost_timeout_s * frame_rate))


def _no_tracks() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


class CameraTracker:
    """One camera's tracker: detections in, track events and selected crops out.

    ``kind`` is ``"bytetrack"`` (default) or ``"botsort"``; ``overrides`` change keys of its ultralytics yaml
    (``track_buffer`` is in frames). With an enabled ``appearance`` (ByteTrack), :meth:`update` takes HA-CNN
    embeddings of the detections :meth:`embedding_wanted` names and mixes appearance into the association
    (:mod:`detectors.appearance`).
    ``gate`` (calibrated cameras) vetoes matches no walk could make (:mod:`detectors.ground`).
    ``lost_timeout_s``, when given, sets ``track_buffer`` to that many seconds of ``frame_rate``. Crops are padded
    by ``pad_frac`` of the box on each side and judged with ``quality``; ``selector`` (one per tracker) defaults to
    ``BestCropSelector`` (crops at least a second apart).
    """

    def __init__(
        self,
        camera_id: str,
        kind: TrackerKind = "bytetrack",
        frame_rate: float = 30.0,
        overrides: Mapping[str, Any] | None = None,
        lost_timeout_s: float | None = None,
        pad_frac: float = 0.0,
        quality: QualityConfig | None = None,
        selector: BestCropSelector | None = None,
        appearance: AppearanceConfig | None = None,
        gate: GroundGate | None = None,
    ):
        if frame_rate <= 0:
            raise TrackerConfigError(f"frame_rate must be > 0, got {frame_rate}")
        overrides = dict(overrides or {})
        if lost_timeout_s is not None:
            if "track_buffer" in overrides:
                raise TrackerConfigError("give lost_timeout_s or overrides['track_buffer'], not both")
            overrides["track_buffer"] = buffer_frames(lost_timeout_s, frame_rate)
        self.camera_id = camera_id
        self.kind = kind
        self.frame_rate = frame_rate
        self.args = tracker_args(kind, overrides)
        self.pad_frac = pad_frac
        self.quality = quality or QualityConfig()
        self.selector = selector or BestCropSelector()
        self.tracks = _no_tracks()
        self.appearance = appearance if appearance is not None and appearance.enabled else None
        self.gate = gate
        self._tracker = build_tracker(kind, self.args, self.appearance, gate)
        self._ids = itertools.count(1)
        self._by_raw: dict[int, _Track] = {}
        self._last_frame_index = -1
        self._last_ts = 0.0
        self._asked: tuple[float, np.ndarray, np.ndarray] | None = None  # the last embedding_wanted's answer
        log.info("camera %s: %s tracker%s, track_buffer %d frames at %.1f fps", camera_id, kind,
                 " with appearance" if self.appearance else "", int(self.args.track_buffer), frame_rate)

    @property
    def wants_embeddings(self) -> bool:
        """True when :meth:`update` needs embeddings (one row per detection, those :meth:`embedding_wanted` names
        filled in)."""
        return self.appearance is not None

    def embedding_wanted(self, detections: Detections, ts: float) -> np.ndarray:
        """Which rows of ``detections`` (this camera's next frame, at video time ``ts``) :meth:`update` needs an
        embedding for: all False without appearance (:meth:`AppearanceByteTrack.wanted`)."""
        if self.appearance is None:
            return np.zeros(len(detections), bool)
        mask = self._tracker.wanted(detections.xyxy, detections.conf, ts)
        self._asked = (ts, detections.xyxy, mask)  # update() of these detections reads the same mask
        return mask

    @property
    def similarity_levels(self) -> tuple[float, float] | None:
        """The appearance tracker's (same person, two people) typical cosines in use; None without appearance."""
        return self._tracker.scale.levels if self.appearance is not None else None

    def update(self, frame: np.ndarray, frame_index: int, ts: float, detections: Detections,
               embeddings: np.ndarray | None = None) -> list[TrackCrop]:
        """Track ``detections`` of ``frame``; returns this frame's events, crops as views into ``frame``.

        ``embeddings``: with appearance, one embedding per detection row (normalised here); only the rows
        :meth:`embedding_wanted` names are read, the others may be anything (zeros); without appearance, ignored.

        STARTED (with a crop) for a new confirmed track; ACTIVE with a crop when the selector picks one, and
        state-only when a LOST track is found again; LOST when the tracker loses a track; ENDED when it drops
        one after ``track_buffer`` frames (preceded by an ACTIVE event with the best unsent kept crop, if any).
        """
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.camera_id}: frame must be a BGR uint8 (H, W, 3) array")
        self._last_frame_index, self._last_ts = frame_index, ts
        tracker_input = _TrackerInput(detections.xyxy, detections.conf)
        self._tracker.stamp(ts)
        if self.appearance is not None:
            asked, self._asked = self._asked, None
            wanted = asked[2] if asked is not None and asked[0] == ts and asked[1] is detections.xyxy \
                else self._tracker.wanted(detections.xyxy, detections.conf, ts)
            feats = np.where(wanted[:, None], _unit_rows(embeddings, len(detections), self.camera_id), 0.0)
            feats = feats.astype(np.float32, copy=False)
            out = self._tracker.update(tracker_input, frame, feats, embedded=wanted, ts=ts)
        else:
            out = self._tracker.update(tracker_input, frame)
        out = np.asarray(out, dtype=np.float32).reshape(-1, 8) if len(out) else np.zeros((0, 8), np.float32)
        raw_ids = out[:, 4].astype(np.int64)
        det_idx = out[:, 7].astype(np.int64)
        boxes = detections.xyxy[det_idx]  # the detection itself, not the Kalman estimate: crops follow pixels
        confs = detections.conf[det_idx]

        events: list[TrackCrop] = []
        seen = set(raw_ids.tolist())
        lost_raw = {int(t.track_id) for t in self._tracker.lost_stracks}
        for raw, track in list(self._by_raw.items()):
            if raw in seen:
                continue
            if raw in lost_raw:
                if not track.lost:
                    track.lost = True
                    events.append(self._state_event(track, TrackState.LOST))
            else:
                events.extend(self._end(track))

        quality = assess_quality(frame, boxes, confs, self.quality)
        crops = crop_views(frame, boxes, self.pad_frac)
        overlap = box_iou(detections.xyxy, detections.xyxy) if len(detections) > 1 else np.zeros((len(detections),) * 2)
        np.fill_diagonal(overlap, 0)
        crowded = overlap.max(axis=1) > CLEAN_IOU if len(detections) else np.zeros(0, bool)
        track_ids = np.empty(len(raw_ids), dtype=np.int64)
        for i, raw in enumerate(raw_ids.tolist()):
            track = self._by_raw.get(raw)
            is_new = track is None
            if track is None:
                track = _Track(next(self._ids), raw, False, boxes[i], float(confs[i]))
                self._by_raw[raw] = track
            refound, was_crowded = track.lost, track.crowded
            track.lost, track.xyxy, track.conf = False, boxes[i], float(confs[i])
            track.crowded = bool(crowded[det_idx[i]])
            track_ids[i] = track.track_id
            state = TrackState.STARTED if is_new else TrackState.ACTIVE
            candidate = TrackCrop(self.camera_id, track.track_id, state, frame_index, ts, boxes[i].copy(),
                                  float(confs[i]), quality[i].score, quality[i].verdicts,
                                  crops[i] if crops[i].size else None)
            if self.selector.offer(candidate, crossing_exit=was_crowded and not track.crowded and not is_new):
                events.append(candidate)
            elif refound:
                events.append(self._state_event(track, TrackState.ACTIVE))
        self.tracks = Detections(boxes.astype(np.float32, copy=False), confs.astype(np.float32, copy=False),
                                 track_ids)
        return events

    def flush(self) -> list[TrackCrop]:
        """End every track (end of stream): final crops and ENDED events; the tracker starts afresh, ids go on."""
        events = []
        for track in list(self._by_raw.values()):
            events.extend(self._end(track))
        scale = getattr(self._tracker, "scale", None)
        self._tracker = build_tracker(self.kind, self.args, self.appearance, self.gate)
        if scale is not None:
            self._tracker.scale = scale  # what was learnt about the embedding outlives the tracks
        self.tracks = _no_tracks()
        return events

    def _end(self, track: _Track) -> list[TrackCrop]:
        del self._by_raw[track.raw_id]
        events = []
        final = self.selector.finish(track.track_id)
        if final is not None:
            events.append(replace(final, state=TrackState.ACTIVE))
        events.append(self._state_event(track, TrackState.ENDED))
        return events

    def _state_event(self, track: _Track, state: TrackState) -> TrackCrop:
        return TrackCrop(self.camera_id, track.track_id, state, self._last_frame_index, self._last_ts,
                         np.asarray(track.xyxy, dtype=np.float32).copy(), track.conf, 0.0, (), None)
