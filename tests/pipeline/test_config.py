"""Configuration errors name the file, the line and the field."""

import contextlib
import os
import shutil
import subprocess

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError, load_config
from pipeline.supervisor import PipelineError, check_sources, prepare_run_dir
from run_pipeline import main

from .conftest import EXAMPLE


def test_example_config_loads_and_resolves_paths():
    cfg = load_config(EXAMPLE)
    assert [c.id for c in cfg.cameras] == ["c0", "c1", "c2"]
    for c in cfg.cameras:
        assert c.source.endswith(f"campus4-{c.id}.mp4")
    assert cfg.detector.weights.is_file() and cfg.reid.weights.is_file()
    assert cfg.matcher.redis.url is None
    assert cfg.matcher.redis.embedded_dir == cfg.resolved_run_dir / "redis"
    check_sources(cfg)


def test_validate_config_cli(capsys):
    assert main(["--cameras", str(EXAMPLE), "--validate-config"]) == 0
    assert "OK (3 cameras" in capsys.readouterr().out


def _write(tmp_path, text):
    p = tmp_path / "cams.yaml"
    p.write_text(text)
    return p


def test_malformed_yaml(tmp_path):
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: [x.mp4\n")
    with pytest.raises(ConfigError, match=r"cams.yaml:\d+: malformed YAML"):
        load_config(p)
    assert main(["--cameras", str(p), "--validate-config"]) == 2


def test_unknown_field_is_named_with_its_line_and_a_suggestion(tmp_path):
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\nreid:\n  batch_sise: 8\n")
    expected = r"cams.yaml:5 reid.batch_sise: unknown field \(did you mean 'batch_size'\?\)"
    with pytest.raises(ConfigError, match=expected):
        load_config(p)


def test_bad_values_are_named(tmp_path):
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\n    detect_fps: -1\n")
    with pytest.raises(ConfigError, match="cams.yaml:4 cameras.0.detect_fps: Input should be greater than 0"):
        load_config(p)
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\n  - id: a\n    source: b.mp4\n")
    with pytest.raises(ConfigError, match=r"camera ids must be unique, repeated: \['a'\]"):
        load_config(p)
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: rtsp://cam/1\n    reconnect_backoff_s: [5, 1]\n")
    with pytest.raises(ConfigError, match="cams.yaml:4 cameras.0.reconnect_backoff_s: .*0 < first <= longest"):
        load_config(p)


def test_missing_config_and_missing_video(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: configuration file not found"):
        load_config(tmp_path / "nope.yaml")
    p = _write(tmp_path, "cameras:\n  - id: lobby\n    source: lobby.mp4\n")
    with pytest.raises(PipelineError, match=r"camera lobby: .*lobby.mp4: video file not found"):
        check_sources(load_config(p))
    assert main(["--cameras", str(p), "--validate-config"]) == 2


def test_truncated_video_is_named(tmp_path, shared):
    src = shared / "video" / "epfl_campus4" / "campus4-c0.mp4"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    p = _write(tmp_path, f"cameras:\n  - id: yard\n    source: {cut}\n")
    with pytest.raises(PipelineError, match=r"camera yard: .*cut.mp4: cannot open video \(corrupt, truncated"):
        check_sources(load_config(p))
    shutil.copy(src, tmp_path / "ok.mp4")
    check_sources(load_config(_write(tmp_path, f"cameras:\n  - id: yard\n    source: {tmp_path / 'ok.mp4'}\n")))


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=12))
def test_loader_never_crashes_on_arbitrary_yaml(tmp_path_factory, data):
    """Any YAML document either loads or raises ConfigError: never another exception."""
    import yaml

    p = tmp_path_factory.mktemp("h") / "c.yaml"
    p.write_text(yaml.safe_dump({"cameras": data}) if data is not None else "cameras: []")
    try:
        load_config(p)
    except ConfigError:
        pass


def test_unusable_run_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PipelineError, match=r"run directory .*file/run is not usable: Not a directory"):
        prepare_run_dir(blocker / "run")
    prepare_run_dir(tmp_path / "fine" / "run")
    assert (tmp_path / "fine" / "run").is_dir()


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB file system (tmpfs), to fill up or make read-only."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_or_read_only_disk_stops_the_run_at_start(small_disk, caplog):
    """Before any stage starts: a clear error naming the folder and the cause, exit code 1, nothing left running."""
    cfg = str(EXAMPLE)
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    with pytest.raises(PipelineError, match=r"disk/run is not usable: No space left on device"):
        prepare_run_dir(small_disk / "run")
    before = set(psutil.Process().children(recursive=True))  # the session's test Redis, if started already
    assert main(["--cameras", cfg, "--replay", "--run-dir", str(small_disk / "run2")]) == 1
    assert "run2 is not usable: No space left on device" in caplog.text
    assert not set(psutil.Process().children(recursive=True)) - before, "a stage or Redis was started anyway"
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(PipelineError, match=r"disk/run is not usable: Read-only file system"):
        prepare_run_dir(small_disk / "run")


def test_homography_file_matrix_and_bad_calibration(tmp_path, shared):
    """A homography file is read relative to the config; a singular one or a missing geometry section is a clear
    error naming the file, line and field."""
    import numpy as np

    from pipeline.config import ConfigError, load_config

    video = shared / "video" / "epfl_terrace1" / "terrace1-c0.mp4"
    (tmp_path / "h.txt").write_text((shared / "video" / "epfl_terrace1" / "homography-c0.txt").read_text())
    geometry = "geometry: {same_place: 35, different_place: 70, max_speed: 150}\n"
    good = f"cameras:\n  - id: c0\n    source: {video}\n    homography: h.txt\n" + geometry
    (tmp_path / "good.yaml").write_text(good)
    cfg = load_config(tmp_path / "good.yaml")
    h = cfg.cameras[0].ground()
    np.testing.assert_allclose(h.matrix * np.abs(np.loadtxt(tmp_path / "h.txt")).max(), np.loadtxt(tmp_path / "h.txt"))

    (tmp_path / "singular.yaml").write_text(
        f"cameras:\n  - id: c0\n    source: {video}\n    homography: [[1, 2, 3], [2, 4, 6], [0, 0, 1]]\n" + geometry)
    with pytest.raises(ConfigError, match=r"singular.yaml:4 cameras.0.homography: .*singular"):
        load_config(tmp_path / "singular.yaml")
    (tmp_path / "short.txt").write_text("1 0 0\n0 1 0\n")
    (tmp_path / "short.yaml").write_text(f"cameras:\n  - id: c0\n    source: {video}\n    homography: short.txt\n"
                                         + geometry)
    with pytest.raises(ConfigError, match=r"short.yaml:4 cameras.0.homography: .*3x3"):
        load_config(tmp_path / "short.yaml")
    (tmp_path / "nogeo.yaml").write_text(good.replace(geometry, ""))
    with pytest.raises(ConfigError, match="geometry section"):
        load_config(tmp_path / "nogeo.yaml")


def test_ground_offset_moves_the_cameras_ground_positions(tmp_path, shared):
    """A camera's ``ground_offset`` is added to every ground position its homography gives (so every consumer of
    ``CameraConfig.ground()`` sees it); one without a homography, or not two finite numbers, is refused naming the
    file, line and field."""
    import numpy as np

    from pipeline.config import ConfigError, load_config

    video = shared / "video" / "epfl_terrace1" / "terrace1-c0.mp4"
    h = (shared / "video" / "epfl_terrace1" / "homography-c0.txt").as_posix()
    geometry = "geometry: {same_place: 35, different_place: 70, max_speed: 150}\n"
    plain = load_config(_write(tmp_path, f"cameras:\n  - id: c0\n    source: {video}\n    homography: {h}\n"
                                         + geometry)).cameras[0].ground()
    moved = load_config(_write(tmp_path, f"cameras:\n  - id: c0\n    source: {video}\n    homography: {h}\n"
                                         f"    ground_offset: [9.5, -2.25]\n" + geometry)).cameras[0].ground()
    feet = np.array([[100.0, 250.0], [300.0, 280.0], [200.0, 200.0]])
    (a, ok_a), (b, ok_b) = plain.project(feet), moved.project(feet)
    assert ok_a.all() and ok_b.all()
    np.testing.assert_allclose(b - a, np.tile([9.5, -2.25], (3, 1)), atol=1e-6)
    assert moved.project_point(*feet[0]) == pytest.approx(tuple(b[0]))
    with pytest.raises(ConfigError, match=r"cams.yaml:2 cameras.0: .*ground_offset corrects a homography"):
        load_config(_write(tmp_path, f"cameras:\n  - id: c0\n    source: {video}\n    ground_offset: [1, 2]\n"))
    for bad in ("[1]", "[.nan, 0]"):
        with pytest.raises(ConfigError, match=r"cams.yaml:5 cameras.0.ground_offset"):
            load_config(_write(tmp_path, f"cameras:\n  - id: c0\n    source: {video}\n    homography: {h}\n"
                                         f"    ground_offset: {bad}\n" + geometry))


def test_geometry_units_give_metre_defaults_and_refuse_another_unit(tmp_path, shared):
    """``units: m`` (what the calibration page writes) brings the metre defaults, scaled for cm; a value that
    looks like another unit's is refused naming the file, line and field."""
    from pipeline.config import ConfigError, load_config

    video = shared / "video" / "epfl_terrace1" / "terrace1-c0.mp4"
    head = f"cameras:\n  - id: c0\n    source: {video}\n    homography: [[1, 0, 0], [0, 1, 0], [0, 0.001, 1]]\n"
    g = load_config(_write(tmp_path, head + "geometry:\n  units: m\n")).geometry
    assert (g.same_place, g.different_place, g.max_speed, g.unit_name) == (0.3, 0.75, 3.0, "m")
    g = load_config(_write(tmp_path, head + "geometry:\n  units: cm\n  same_place: 25\n")).geometry
    assert (g.same_place, g.different_place, g.max_speed) == (25, 75, 300)
    with pytest.raises(ConfigError, match=r"cams.yaml:5 geometry: .*same_place 0.3 is not a plausible value in cm"):
        load_config(_write(tmp_path, head + "geometry:\n  units: cm\n  same_place: 0.3\n"))
    with pytest.raises(ConfigError, match=r"must exceed same_place \(0.3\) \(with units: m, what is not given"):
        load_config(_write(tmp_path, head + "geometry:\n  units: m\n  different_place: 0.25\n"))
    with pytest.raises(ConfigError, match=r"geometry.units: Input should be 'm', 'cm' or 'mm'"):
        load_config(_write(tmp_path, head + "geometry:\n  units: feet\n"))
    # cm values in a mm config (10x off) are refused too
    with pytest.raises(ConfigError, match=r"same_place 30 is not a plausible value in mm"):
        load_config(_write(tmp_path, head + "geometry:\n  units: mm\n  same_place: 30\n"))
    # a second geometry section pasted below the first would silently replace it: refused, with both lines
    with pytest.raises(ConfigError, match=r"cams.yaml:7: malformed YAML: duplicate key 'geometry' \(first on line 5\)"):
        load_config(_write(tmp_path, head + "geometry:\n  units: m\ngeometry:\n  same_place: 0.4\n"))


@pytest.mark.parametrize("reid, message", [
    ("backend: tensorrt\n  device: cpu", "backend tensorrt needs a GPU"),
    ("backend: torch\n  precision: int8\n  int8_onnx: q.onnx", "backend torch runs fp32 or fp16, not int8"),
    ("backend: onnxruntime\n  precision: fp16", "backend onnxruntime runs fp32 or int8, not fp16"),
    ("precision: int8", "precision int8 needs int8_onnx"),
    ("int8_onnx: q.onnx", "int8_onnx is used only with precision int8"),
    ("device: cuda:1", "String should match pattern"),
])
def test_impossible_embedder_settings_are_caught_at_load_time(tmp_path, reid, message):
    p = _write(tmp_path, f"cameras:\n  - id: a\n    source: a.mp4\nreid:\n  {reid}\n")
    with pytest.raises(ConfigError, match=rf"cams.yaml:\d+ reid(\.device)?: .*{message}"):
        load_config(p)
    assert main(["--cameras", str(p), "--validate-config"]) == 2


def test_the_old_match_section_says_where_its_settings_went(tmp_path):
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\nmatch:\n  min_age_s: 1\n")
    with pytest.raises(ConfigError, match="the match section is gone: .* now in the matcher section"):
        load_config(p)


def test_detector_device_is_checked(tmp_path):
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\ndetector:\n  device: gpu0\n")
    with pytest.raises(ConfigError, match=r"cams.yaml:5 detector.device: String should match pattern"):
        load_config(p)


def test_the_association_may_embed_with_its_own_weights(tmp_path):
    from pipeline.detect_stage import association_reid

    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\nreid:\n  weights: site.pt\n")
    cfg = load_config(p)
    assert association_reid(cfg).weights == cfg.reid.weights == tmp_path / "site.pt"
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\nreid:\n  weights: site.pt\n"
                         "detector:\n  appearance:\n    weights: w/default.pt\n")
    cfg = load_config(p)
    assert association_reid(cfg).weights == tmp_path / "w" / "default.pt"  # relative to the config file
    assert cfg.reid.weights == tmp_path / "site.pt"


def test_appearance_in_the_association_needs_bytetrack(tmp_path):
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\ndetector:\n  tracker: botsort\n")
    with pytest.raises(ConfigError, match=r"cams.yaml:\d+ detector: .*appearance.enabled needs tracker: bytetrack"):
        load_config(p)
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\ndetector:\n  tracker: botsort\n"
                         "  appearance:\n    enabled: false\n")
    assert load_config(p).detector.appearance.enabled is False
    p = _write(tmp_path, "cameras:\n  - id: a\n    source: a.mp4\ndetector:\n  appearance:\n    weight: 2\n")
    with pytest.raises(ConfigError, match=r"cams.yaml:6 detector.appearance.weight: .*less than or equal to 1"):
        load_config(p)
