"""campus4's hand labels (``benchmarks/campus4_tracks.json``) label any run's tracks by overlap with the labelled
boxes (``benchmarks/mtmc_accuracy.campus_labels``): the shipped tracker's tracks get their own labels back, and a
tracker that cuts a track where it swaps people gets each part's person."""

from __future__ import annotations

import json

from benchmarks.mtmc_accuracy import CAMPUS_LABELS, campus_labels, campus_pairs
from pipeline.gaps import TrackLog

LABELS = json.loads(CAMPUS_LABELS.read_text())


def logs_of(tracks: dict[str, list[list[float]]]) -> dict[str, TrackLog]:
    """Track logs holding ``tracks`` ("camera/id" -> rows of frame, x1, y1, x2, y2)."""
    out: dict[str, TrackLog] = {}
    for key, rows in tracks.items():
        cam, tid = key.split("/")
        log = out.setdefault(cam, TrackLog({}, {}))
        for frame, *box in rows:
            log.boxes.setdefault(int(frame), []).append([int(tid), *box, 0.9])
            log.times[int(frame)] = frame / 25
    return out


def test_the_shipped_trackers_tracks_get_their_labels_back_and_a_switching_track_its_majority():
    labels = campus_labels(logs_of(LABELS["boxes"]))
    expected = dict(LABELS["tracks"])
    expected["c2/1"] = "B"  # A for 24 boxes, then B for 31 (its switch at frame 325)
    assert labels == expected  # the unclear tracks are left out


def test_a_track_cut_where_it_swaps_people_gets_each_parts_person():
    tracks = {k: v for k, v in LABELS["boxes"].items() if k != "c1/1"}
    rows = LABELS["boxes"]["c1/1"]
    tracks["c1/101"] = [r for r in rows if r[0] < 325]
    tracks["c1/102"] = [r for r in rows if r[0] >= 325]
    moved = [[f, x1 + 200, y1, x2 + 200, y2] for f, x1, y1, x2, y2 in LABELS["boxes"]["c0/1"]]
    tracks["c0/1"] = moved  # boxes where nobody was labelled: left out
    labels = campus_labels(logs_of(tracks))
    assert (labels["c1/101"], labels["c1/102"]) == ("A", "B")
    assert "c0/1" not in labels and "c1/1" not in labels


def test_pairs_score_one_identity_per_person_perfectly_and_one_identity_for_all_by_its_precision():
    logs = logs_of(LABELS["boxes"])
    person = campus_labels(logs)
    ids = {p: i for i, p in enumerate(sorted(set(person.values())))}
    perfect = campus_pairs({k: ids[p] for k, p in person.items()}, logs)
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)
    merged = campus_pairs({k: 0 for k in person}, logs)
    assert merged["recall"] == 1.0 and 0.1 < merged["precision"] < 0.5
