"""Learning a site without labels, on real video: the pseudo-identities of the crowded terrace1 clip, their
constraints, the guard rails, and a whole ``python -m reid.adapt`` run that never reads the ground truth."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.evaluate_mtmc import person_votes, read_mot
from reid.adapt.__main__ import main as adapt_main
from reid.adapt.__main__ import track_embeddings
from reid.adapt.dataset import _checked
from reid.adapt.harvest import PIECE_STRIDE, HarvestError, harvest, pieces, split_at_crossings
from reid.adapt.pseudo import build_labels, cross_camera_negatives, overlapping
from reid.paths import PROJECT_ROOT
from reid.weights import read_weights
from tests.sites import CROWD, SPARSE, needs, site_config
from trt_engines.cache import file_hash


@pytest.fixture(scope="module")
def crowd_harvest():
    needs(CROWD)
    return harvest(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml", progress=False)  # 30 s


def _majority_person(track, gt) -> int | None:
    """The ground-truth person most of a harvested track's matched boxes are (scoring only)."""
    votes = person_votes(track.ts, track.boxes, gt, 25)
    votes.pop(-1, None)
    return votes.most_common(1)[0][0] if votes else None


def _check_labels(rec, labels) -> tuple[int, int]:
    """Co-visible tracks of one camera never share a label (the constraint holds for whole groups); returns the
    cross-camera pairs of tracks sharing a label and how many of them are one person by the ground truth (scoring
    only: the adaptation never sees it)."""
    by_key = {t.key: t for t in rec.tracks}
    for a in labels.labels:
        for b in labels.labels:
            if a < b and a[1] == b[1] and overlapping(by_key[a], by_key[b]):
                assert labels.labels[a] != labels.labels[b], f"{a} and {b} are seen together yet share a label"
                # ... and training may push their labels apart; pairs nothing proves apart it must not.
                assert frozenset((labels.labels[a], labels.labels[b])) in labels.apart
    # Every pair of labels is either proven apart or unknown, never both.
    unknown = set(labels.unknown_pairs())
    proven = {tuple(sorted(p)) for p in labels.apart}
    n = labels.num_labels
    assert not proven & unknown and len(proven) + len(unknown) == n * (n - 1) // 2
    gt = {c: read_mot(CROWD / "gt" / f"{c}.txt") for c in rec.cameras}
    person = {k: _majority_person(t, gt[t.camera_id]) for k, t in by_key.items() if k in labels.labels}
    pairs = right = 0
    for lab in set(labels.labels.values()):
        members = [k for k, v in labels.labels.items() if v == lab]
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if a[1] != b[1] and person[a] is not None and person[b] is not None:
                    pairs += 1
                    right += person[a] == person[b]
    return pairs, right


def test_pseudo_identities_of_a_crowded_clip(crowd_harvest):
    labels = build_labels([crowd_harvest])
    assert labels.ground_links > 0, "overlapping calibrated views must give cross-camera pseudo-identities"
    assert any(len(labels.cameras_of(lab)) == 2 for lab in set(labels.labels.values()))
    # Calibrated views only: no appearance merge, so each label is one group the video proves.
    for lab in set(labels.labels.values()):
        assert len({labels.evidence[k] for k, v in labels.labels.items() if v == lab}) == 1
    pairs, right = _check_labels(crowd_harvest, labels)
    assert pairs >= 5 and right / pairs >= 0.8, f"{right} of {pairs} cross-camera pairs are one person"


def test_pseudo_identities_without_calibration(crowd_harvest):
    """The same clip with its calibration hidden: tracks of the two views merge on appearance, above what the
    video proves two people seen from two cameras score, and the held-out check leaves those merges out."""
    rec = replace(crowd_harvest, cameras=dict.fromkeys(crowd_harvest.cameras), geometry=None)
    emb = track_embeddings([rec], PROJECT_ROOT / "reid" / "weights" / "hacnn_joint.pt")
    by_key = {t.key: t for t in rec.tracks}
    cross = [(a, b) for a in emb for b in emb if a < b and a[1] != b[1]]
    negatives = cross_camera_negatives(list(by_key.values()), cross, emb)
    assert len(negatives) >= 20
    # The pairs it calls two people score lower than those of one camera seen together (why they set the bar).
    co_visible = [float(emb[a] @ emb[b]) for a in emb for b in emb
                  if a < b and a[1] == b[1] and overlapping(by_key[a], by_key[b])]
    assert np.median(negatives) < np.median(co_visible)
    labels = build_labels([rec], emb)
    assert labels.ground_links == 0 and labels.appearance_links > 0
    assert labels.appearance_threshold == pytest.approx(np.quantile(negatives, 0.95))
    pairs, right = _check_labels(rec, labels)
    assert pairs >= 3 and right / pairs >= 0.75, f"{right} of {pairs} cross-camera pairs are one person"
    # The held-out check keeps, per label, one group the video itself proves (here: one track).
    held = {}
    for t in rec.tracks:
        if t.key in labels.labels and t.crops:
            held.setdefault(labels.labels[t.key], {})[t.key] = t.crops
    checked = _checked(held, labels)
    assert len({label for label, _, _ in checked}) == len(held)
    assert len(checked) == len(held), "a label's appearance-merged tracks are left out of the check"


def _crop_purity(rec, labels) -> float:
    """The share of the labelled crops that are their label's main person, each crop's person its own box's
    (scoring only)."""
    gt = {c: read_mot(CROWD / "gt" / f"{c}.txt") for c in rec.cameras}
    by_label: dict[int, Counter] = {}
    for t in rec.tracks:
        if t.key in labels.labels:
            box_at = dict(zip(t.ts, t.boxes, strict=True))
            for c in t.crops:
                (who,) = person_votes([c.ts], [box_at[c.ts]], gt[t.camera_id], 25)
                if who != -1:
                    by_label.setdefault(labels.labels[t.key], Counter())[who] += 1
    return sum(v.most_common(1)[0][1] for v in by_label.values()) / sum(sum(v.values()) for v in by_label.values())


def test_tracks_are_cut_where_they_come_out_of_a_crossing(crowd_harvest):
    """A calibrated camera's track is cut at its first clear sighting after crowded ones; the pieces hold the
    track's sightings and crops in order. The labels put a track's consecutive pieces together again unless the
    other view placed them with different tracks, hold fewer crops of a second person than whole tracks do (the
    tracker's swaps at crossings), and never join co-visible pieces."""
    cut = split_at_crossings(crowd_harvest)
    assert len(cut.tracks) > len(crowd_harvest.tracks)
    by_track: dict[tuple, list] = {}
    for p in cut.tracks:
        by_track.setdefault((p.recording, p.camera_id, p.parent), []).append(p)
    assert len({p.key for p in cut.tracks}) == len(cut.tracks)
    for t in crowd_harvest.tracks:
        parts = by_track[t.key]
        assert [x for p in parts for x in p.ts] == t.ts and [c for p in parts for c in p.crops] == t.crops
        assert [p.track_id // PIECE_STRIDE for p in parts] == [t.track_id] * len(parts)
        for before, after in pairwise(parts):
            assert before.crowded[-1] and not after.crowded[0]
        for p in parts:  # one cut per exit: no piece comes clear of a crossing inside
            assert not any(was and not now for was, now in pairwise(p.crowded))
        assert all(not p.crowded[p.ts.index(c.ts)] for p in parts for c in p.crops)
    whole, labels = build_labels([crowd_harvest]), build_labels([cut])
    _check_labels(cut, labels)
    assert _crop_purity(cut, labels) > _crop_purity(crowd_harvest, whole)
    # Consecutive pieces share a label unless the other view's tracks with them differ, or a constraint (two
    # people seen together) separates their labels.
    together = apart = 0
    for parts in by_track.values():
        for a, b in pairwise(parts):
            if a.key not in labels.labels or b.key not in labels.labels:
                continue
            la, lb = labels.labels[a.key], labels.labels[b.key]
            if la == lb:
                together += 1
                continue
            apart += 1
            seen_with = [{(k[1], k[2] // PIECE_STRIDE) for k, v in labels.labels.items()
                          if v == lab and k[1] != a.camera_id} for lab in (la, lb)]
            assert (seen_with[0] and seen_with[1]) or frozenset((la, lb)) in labels.apart
    assert together > apart > 0 and labels.rejoined > 0
    # Without calibration nothing but appearance could join the pieces again: tracks stay whole.
    hidden = replace(crowd_harvest, cameras=dict.fromkeys(crowd_harvest.cameras), geometry=None)
    assert split_at_crossings(hidden).tracks == hidden.tracks
    assert pieces(crowd_harvest.tracks[0])[0].parent == crowd_harvest.tracks[0].track_id


def test_clean_crops_only_and_bounded_per_track(crowd_harvest):
    for t in crowd_harvest.tracks:
        assert len(t.crops) <= 40
        assert all(c.image.ndim == 3 and c.image.shape[0] >= 48 for c in t.crops)
        assert len(t.ts) == len(t.boxes) == len(t.ground) == len(t.crowded)


def test_a_config_without_recorded_video_is_refused(tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump({"cameras": [{"id": "door", "source": "rtsp://127.0.0.1:1/stream"}]}))
    with pytest.raises(HarvestError, match="no camera plays a recorded video file"):
        harvest(path, progress=False)


def test_too_little_video_is_refused(tmp_path, capsys):
    needs(CROWD)
    cfg = site_config(tmp_path, CROWD, "short")
    assert adapt_main(["--cameras", str(cfg), "--duration", "3", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow
def test_adapt_end_to_end_without_ground_truth(tmp_path):
    """A whole run on 20 s of both clips: the files it opens never include a ground-truth file, and it writes
    weights whose card records the video, the pseudo-identities, the figures and the starting weights' hash."""
    needs(CROWD)
    needs(SPARSE)
    configs = [site_config(tmp_path, SPARSE, "sparse"), site_config(tmp_path, CROWD, "crowd")]
    opened: list[str] = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | Path):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed: it only records, and the list is this test's
    out = tmp_path / "adapted"
    start = PROJECT_ROOT / "reid" / "weights" / "hacnn_joint.pt"
    code = adapt_main(["--cameras", str(configs[0]), "--cameras", str(configs[1]), "--duration", "20",
                       "--out", str(out), "--weights", str(start), "--epochs", "2", "--time-budget-s", "120",
                       "--rehearse-ids", "20", "--max-crops-per-track", "12"])
    seen = list(opened)
    assert not [p for p in seen if "/gt/" in p or p.endswith("gt")], "the adaptation read ground truth"
    assert any(p.endswith("homography-c0.txt") for p in seen)
    assert code == 0, "the adaptation should improve its own held-out consistency on these clips"
    card = read_weights(out / "model.pt")["card"]
    a = card["adaptation"]
    assert a["start_weights_sha256"] == file_hash(start, None)
    assert set(a["videos"]) == {"sparse", "crowd"}
    assert a["pseudo_labels"]["pseudo_identities"] >= 8
    after, before = a["pseudo_label_consistency"]["after"], a["pseudo_label_consistency"]["before"]
    assert after["mAP"] >= before["mAP"]
    assert card["recipe"]["init"] == str(start)
    kept = a["rehearsal"]  # the source domain trained on beside the site, and measured before and after
    assert kept["train_ids"] == 20 and {"before", "after"} <= set(kept)


def test_rehearsal_keeps_several_source_domains_apart_in_one_folder(tmp_path):
    """The default weights learnt Market-1501 and cuhk03_p1: rehearsing both shares the people between them, in one
    folder (one dataset for the trainer's balanced batches), without either's person or camera ids meeting the
    other's. By default cuhk03_p1 alone is rehearsed."""
    from reid.adapt.__main__ import parse_args, rehearsal_sources
    from reid.adapt.dataset import SOURCE_PID_OFFSET, write_rehearsal
    from reid.data import load_market
    from reid.paths import default_dataset

    shared = default_dataset().parent
    for name in ("market1501", "cuhk03_p1"):
        if not (shared / name).is_dir():
            pytest.skip(f"{shared / name} is not here")
    assert rehearsal_sources(parse_args(["--cameras", "c.yaml", "--out", "o"])) == [shared / "cuhk03_p1"]
    assert rehearsal_sources(parse_args(["--cameras", "c.yaml", "--out", "o", "--rehearse", "none"])) == []
    args = parse_args(["--cameras", "c.yaml", "--out", "o", "--rehearse", str(shared / "market1501"),
                       str(shared / "cuhk03_p1")])
    summary = write_rehearsal(rehearsal_sources(args), tmp_path / "r", num_ids=21, per_id=4, eval_ids=6, seed=0)
    ds = load_market(tmp_path / "r")
    by_source = {k: {s.pid for s in ds.train.samples if s.pid // SOURCE_PID_OFFSET == k} for k in (0, 1)}
    assert sorted(len(v) for v in by_source.values()) == [10, 11] and summary.train_ids == 21
    held_out = ds.query.samples + ds.gallery.samples
    cams = {k: {s.camid for s in held_out if s.pid // SOURCE_PID_OFFSET == k} for k in (0, 1)}
    assert cams[0] and cams[1] and not cams[0] & cams[1]
    assert all(s.path.resolve().parent.parent.name in ("market1501", "cuhk03_p1") for s in ds.train.samples)
