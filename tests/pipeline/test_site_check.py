"""The site check on real video: suggestions measured from the crowded terrace1 clip without its ground truth,
judged against distributions the ground truth gives; the two views' constant shift measured and corrected, and
what that does to the ground links between the clip's real tracks (the per-moment joint association included);
warnings for a calibration made wrong on purpose; the Rayleigh fit; the CLI's errors and outputs."""

from __future__ import annotations

import collections
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.site_check_accuracy import GT_FPS, gt_distances
from pipeline.config import load_config
from pipeline.evaluate_mtmc import match_boxes, read_folder
from pipeline.site_check.__main__ import main as site_check_main
from pipeline.site_check.evidence import shifted
from pipeline.site_check.report import check
from pipeline.site_check.suggest import rayleigh_sigma
from reid.adapt.harvest import harvest
from reid.identity import links
from reid.identity.geometry import AGREE, GeometryConfig, GroundTrack
from reid.identity.links import ContinuityConfig, TrackMotion, moment_partner
from reid.paths import PROJECT_ROOT
from tests.sites import CROWD, SPARSE, needs, site_config


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """The crowd clip harvested and checked from a copy holding no ground truth, with every file opened."""
    needs(CROWD)
    cfg = site_config(tmp_path_factory.mktemp("site"), CROWD, "crowd")
    opened: list[str] = []
    listening = [True]

    def audit(event: str, args: tuple) -> None:
        if listening[0] and event in ("open", "os.listdir", "os.scandir") and isinstance(args[0], str | Path):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed: this one stops recording when the check is done
    try:
        recording = harvest(cfg, progress=False, max_crops_per_track=12)
        config = load_config(cfg)
        embedder = config.reid.build_embedder()
        result = check([recording], embedder, 0.70, {c.id: c.ground_offset for c in config.cameras})
    finally:
        listening[0] = False
    return recording, embedder, result, opened


def test_suggestions_separate_what_the_ground_truth_shows(crowd):
    _, _, result, opened = crowd
    assert not [p for p in opened if "/gt/" in p or p.endswith("gt")], "the site check read ground truth"
    s = {k: v.value for k, v in result.suggestions.items()}
    assert None not in s.values(), {k: v.why for k, v in result.suggestions.items()}
    same, different = gt_distances(load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml"), CROWD / "gt")
    # A suggested same_place below different people's 5th percentile merges few pairs of people; a
    # different_place above the same person's 95th percentile splits few people.
    assert s["same_place"] < np.percentile(different, 5)
    assert s["different_place"] > np.percentile(same, 95)
    assert s["same_place"] > np.percentile(same, 25), "so tight that AGREE would hardly ever fire"
    assert 0 < s["max_speed"]
    assert "one-person" in result.suggestions["threshold"].why  # judged on the ground's pairs (and kept)
    assert result.warnings == []
    assert yaml.safe_load(result.config_lines("cm"))["geometry"]["units"] == "cm"  # the config's units kept
    lines = yaml.safe_load(result.config_lines())
    assert lines["geometry"] == {k: float(f"{s[k]:.3g}") for k in ("same_place", "different_place", "max_speed")}
    assert lines.get("cameras", []) == [{"id": c, "ground_offset": [float(f"{v:.3g}") for v in o.value]}
                                        for c, o in sorted(result.offsets.items()) if o.value is not None]


def _shifted(recording, camera: str, dx: float, dy: float = 0.0):
    """The recording as a calibration off by ``(dx, dy)`` ground units in one camera would have measured it."""
    return shifted([recording], {camera: np.array([dx, dy])})[0]


def test_a_constant_shift_between_views_is_measured_and_corrected(crowd):
    """Two calibrations that disagree by a constant shift: the check measures it from the video alone, suggests the
    camera's ``ground_offset`` (configured + measured), measures the ground rules on the corrected positions, and,
    judged on the ground truth, the offset it suggests brings the same person's two views closer together."""
    recording, embedder, result, _ = crowd
    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml")
    configured = np.asarray(cfg.cameras[1].ground_offset or (0.0, 0.0))
    extra = np.array([12.0, -8.0])  # a third more of the floor slid, on top of what the shipped offset corrects
    moved = check([_shifted(recording, "c1", *extra)], embedder, 0.70, {"c1": tuple(configured)})
    o = moved.offsets["c1"]
    assert o.value is not None, o.why
    np.testing.assert_allclose(o.correction - result.offsets["c1"].correction, -extra, atol=1.5)
    assert moved.suggestions["same_place"].value == pytest.approx(result.suggestions["same_place"].value, rel=0.1)

    def same_person(offset) -> float:
        cams = [cfg.cameras[0], cfg.cameras[1].model_copy(update={"ground_offset": offset})]
        return float(np.median(gt_distances(cfg.model_copy(update={"cameras": cams}), CROWD / "gt")[0]))

    suggested = tuple(configured + result.offsets["c1"].correction)  # for the unmoved views
    assert same_person(suggested) < 0.8 * same_person(None)


def _gt_person(track, gt) -> int:
    """The ground-truth person most of a harvested track's boxes match at IoU 0.5 (-1: mostly nobody)."""
    votes: collections.Counter[int] = collections.Counter()
    for ts, (x1, y1, x2, y2) in zip(track.ts, track.boxes, strict=True):
        ids, boxes = gt[track.camera_id].at(int(round(ts * GT_FPS)) + 1)
        hit, _ = match_boxes(boxes, np.array([[x1, y1, x2 - x1, y2 - y1]]))
        votes[int(ids[hit[0]]) if len(hit) else -1] += 1
    return votes.most_common(1)[0][0]


def _ground_agreements(recording, geometry, c1_shift, monkeypatch) -> tuple[list[tuple[int, int]], list]:
    """Every track's ground AGREE links against the clip's other tracks (whole tracks, as the identity tracker
    sees them at the end), as (person, person) pairs; and each per-moment joint association the rules asked for,
    as (the track's person, the persons of the candidates, the chosen one's person or None)."""
    gt = read_folder(CROWD / "gt")
    motions, person = [], {}
    for t in recording.tracks:
        g = GroundTrack()
        d = np.asarray(c1_shift if t.camera_id == "c1" else (0.0, 0.0))
        for ts, xy in zip(t.ts, t.ground, strict=True):
            if np.isfinite(xy).all():
                g.add(ts, np.asarray(xy) + d)
        m = TrackMotion(t.camera_id, t.track_id, t.ts[0], t.ts[-1], np.asarray(t.boxes[0]), np.asarray(t.boxes[-1]), g)
        motions.append(m)
        person[m.key] = _gt_person(t, gt)
    asked = []

    def spy(track, rivals, competitors, geo):  # noqa: ANN001
        chosen = moment_partner(track, rivals, competitors, geo)
        asked.append((person[track.key], sorted(person[r.key] for r in rivals),
                      None if chosen is None else person[chosen]))
        return chosen

    monkeypatch.setattr(links, "moment_partner", spy)
    pairs = [(person[m.key], person[k]) for m in motions
             for k, v in links.links_for(m, motions, ContinuityConfig(max_gap_s=0), geometry).items() if v == AGREE]
    return pairs, asked


def test_ground_links_on_the_real_tracks_join_one_person(crowd, monkeypatch):
    """The crowd clip's real tracks (the pipeline's detector and tracker), linked on the ground, judged with the
    ground truth (a track whose boxes mostly match nobody is not judged). With c1's measured offset and the rules
    measured on the corrected positions (the shipped config), 27 of 28 AGREE links join one person when written;
    with the dataset's calibration as it comes and the hand-set rules it needed, 3 of 33 join two people. There,
    two tracks of one view stand within same_place of one track at once, and the per-moment joint association
    picks the one of its person."""
    recording = crowd[0]
    cfg = load_config(PROJECT_ROOT / "configs" / "terrace1_crowd.yaml")
    shipped, _ = _ground_agreements(recording, cfg.geometry, (0.0, 0.0), monkeypatch)
    hand_set = GeometryConfig(same_place=30, different_place=75, max_speed=150)
    raw, asked = _ground_agreements(recording, hand_set, -np.asarray(cfg.cameras[1].ground_offset), monkeypatch)

    def wrong(pairs: list[tuple[int, int]]) -> tuple[int, int]:
        judged = [(a, b) for a, b in pairs if a >= 0 and b >= 0]
        return sum(a != b for a, b in judged), len(judged)

    (bad, n), (raw_bad, _) = wrong(shipped), wrong(raw)
    assert n >= 20 and bad <= 0.05 * n, shipped
    assert bad < raw_bad, (shipped, raw)
    picked = [(me, chosen) for me, _, chosen in asked if chosen is not None]
    assert picked and all(me == chosen for me, chosen in picked), asked


def test_a_wrong_calibration_is_reported(crowd):
    recording, embedder, result, _ = crowd
    off = 2 * result.suggestions["same_place"].value  # one view's floor slid by two same_place: still one floor
    near = check([_shifted(recording, "c1", off)], embedder, 0.70)
    assert any("meet no closer than people's at unrelated moments" in w for w in near.warnings), near.warnings
    far = check([_shifted(recording, "c1", 1e4)], embedder, 0.70)  # the floors drift apart
    assert any("do not overlap" in w for w in far.warnings), far.warnings


def test_rayleigh_fit_of_a_truncated_sample():
    rng = np.random.default_rng(3)
    d = np.linalg.norm(rng.normal(0, 12.0, (4000, 2)), axis=1)
    cut = 30.0
    assert rayleigh_sigma(d[d < cut], cut) == pytest.approx(12.0, rel=0.05)
    assert math.isfinite(rayleigh_sigma(d[d < 15], 15))
    # distances crowding towards the cut have no tight mode (a wrong calibration's nearest pairs): no fit, no crash
    crowded = rng.uniform(25, 30, 200)
    assert rayleigh_sigma(crowded, 30.0) is None


def test_cli_says_what_too_little_video_cannot_measure(tmp_path, capsys):
    """20 s of the sparse clip: three people, too few at once to measure anything on the ground. The run still
    writes its report and plot, suggests nothing it cannot back, and keeps the configured threshold."""
    needs(SPARSE)
    cfg = site_config(tmp_path, SPARSE, "sparse")
    out = tmp_path / "out"
    assert site_check_main(["--cameras", str(cfg), "--duration", "20", "--out", str(out)]) == 0
    report = json.loads((out / "site_check.json").read_text())
    assert (out / "site_check.png").stat().st_size > 10_000
    s = report["suggestions"]
    assert set(s) == {"same_place", "different_place", "max_speed", "threshold"}
    assert s["same_place"]["value"] is None and "replay more video" in s["same_place"]["why"]
    assert s["same_place"]["configured"] == load_config(cfg).geometry.same_place and s["threshold"]["value"] == 0.70
    assert report["ground_offsets"] == {}  # no view's shift is suggested without different people to gauge it by
    assert report["config_lines"] == ""
    printed = capsys.readouterr().out
    assert "geometry.same_place" in printed and "nothing measured" in printed


def test_cli_refuses_a_config_without_recorded_video(tmp_path, caplog):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump({"cameras": [{"id": "door", "source": "rtsp://127.0.0.1:1/stream"}]}))
    assert site_check_main(["--cameras", str(path)]) == 2
    assert "no camera plays a recorded video file" in caplog.text
    assert site_check_main(["--cameras", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in caplog.text
