"""pipeline.search: by photo and by identity against a finished run's own Redis, clear errors for bad photos,
the finished run served over HTTP (python -m pipeline.service), and a small version of
benchmarks/search_accuracy.py (top-1 of the search is reid's Rank-1 on the same embeddings)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error

import cv2
import numpy as np
import pytest

from pipeline.config import ReidConfig
from pipeline.search import main
from reid.identity.album import Album, Appearance
from reid.identity.config import MatcherConfig
from reid.identity.matcher import TrackSummary, new_identity
from reid.identity.redis_server import EmbeddedRedis
from reid.identity.store import IdentityStore
from reid.paths import PROJECT_ROOT
from trt_engines.embedder import build_embedder

from .conftest import EXAMPLE, free_port
from .http_client import get_json, upload


@pytest.mark.parametrize("content, why", [(b"", "empty"), (b"not a jpeg at all", "not an image"), (None, "too small"),
                                          ("missing", "cannot read")])
def test_a_bad_photo_is_a_clear_error_naming_it(tmp_path, caplog, content, why):
    photo = tmp_path / "person.jpg"
    if content is None:
        cv2.imwrite(str(photo), np.zeros((8, 40, 3), np.uint8))
    elif content != "missing":
        photo.write_bytes(content)
    assert main(["--photo", str(photo), "--redis", "redis://127.0.0.1:1"]) == 2
    assert str(photo) in caplog.text and why in caplog.text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared):
    """A run directory whose embedded Redis holds three people of cuhk03_p1's gallery, one identity each, with a
    thumbnail and an appearance; returns (run dir, {gid: person id}, a query crop of each person)."""
    run = tmp_path_factory.mktemp("run")
    data = shared / "datasets" / "cuhk03_p1"
    people = (1001, 1002, 1003)
    r = ReidConfig()
    embedder = build_embedder(r.backend, r.precision, r.weights, device=r.device)
    owner, queries = {}, {}
    with EmbeddedRedis(run / "redis") as server:
        store = IdentityStore.from_config(MatcherConfig(), server.url)
        album = Album(store)
        for pid in people:
            paths = sorted((data / "bounding_box_test").glob(f"{pid}_*.jpg"))
            embs = embedder.embed([cv2.imread(str(p)) for p in paths])
            track = TrackSummary.from_crops("c2", pid, np.arange(len(paths), dtype=float), embs)
            gid = store.create_identity(new_identity(track), track.ref).global_id
            album.record(gid, Appearance("c2", pid, 0.0, float(len(paths))), paths[0].read_bytes(), 0.9)
            owner[gid] = pid
            queries[pid] = sorted((data / "query").glob(f"{pid}_*.jpg"))[0]
        store.close()
    return run, owner, queries


def test_search_by_photo_in_a_finished_run(finished_run, tmp_path, capsys):
    run, owner, queries = finished_run
    for pid, photo in queries.items():
        assert main(["--photo", str(photo), "--run-dir", str(run), "--json", "--top", "2",
                     "--thumbnails-out", str(tmp_path / "thumbs")]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["identities"] == 3 and len(out["results"]) == 2
        best = out["results"][0]
        assert owner[best["global_id"]] == pid, out
        assert best["cameras"] == ["c2"] and best["similarity"] > out["results"][1]["similarity"]
        assert cv2.imread(best["thumbnail_paths"][0]) is not None


def test_similar_to_an_identity_and_an_unknown_one(finished_run, capsys, caplog):
    run, owner, _ = finished_run
    gid = next(iter(owner))
    assert main(["--similar-to", str(gid), "--run-dir", str(run)]) == 0
    text = capsys.readouterr().out
    assert "3 identities searched; top 2" in text and f"\n{gid:>6} " not in text
    assert main(["--similar-to", "999", "--run-dir", str(run)]) == 2
    assert "identity 999 does not exist" in caplog.text


def test_a_finished_run_is_served_until_stopped(finished_run, tmp_path):
    """python -m pipeline.service on the run's own Redis: identities, thumbnails and search over HTTP; a second
    server on the same folder is refused (two writers would corrupt its append-only file); SIGTERM ends it."""
    run, owner, queries = finished_run
    port = free_port()
    cmd = [sys.executable, "-m", "pipeline.service", "--cameras", str(EXAMPLE), "--run-dir", str(run)]
    log = open(tmp_path / "service.log", "w")
    proc = subprocess.Popen([*cmd, "--http", f"127.0.0.1:{port}"], cwd=PROJECT_ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "service.log").read_text()
            try:
                status, health = get_json(f"{url}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, (tmp_path / "service.log").read_text()
                time.sleep(0.3)
        assert status == 200 and health["run"] == "finished"
        status, page = get_json(f"{url}/api/identities")
        assert status == 200 and page["total"] == 3 and all(i["thumbnails"] for i in page["items"])
        pid, photo = next(iter(queries.items()))
        status, found = upload(f"{url}/api/search?top=3", photo.name, photo.read_bytes())
        assert status == 200 and owner[found["results"][0]["global_id"]] == pid, found
        assert get_json(f"{url}/metrics")[0] == 404  # a running pipeline's only

        second = subprocess.run([*cmd, "--http", f"127.0.0.1:{free_port()}"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1 and "is served by another embedded Redis" in second.stderr, second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "service.log").read_text()
    assert main(["--similar-to", str(next(iter(owner))), "--run-dir", str(run)]) == 0  # the folder is free again


def test_search_accuracy_benchmark_small(shared):
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        from search_accuracy import run
    finally:
        sys.path.remove(str(PROJECT_ROOT / "benchmarks"))
    out = run(shared / "datasets" / "cuhk03_p1", people=8)
    ref, per_crop, mean = (out[k] for k in ("reid.metrics on the same embeddings", "one prototype per crop",
                                            "one prototype per person (mean)"))
    assert out["people"] == 8 and out["queries"] > 30
    assert per_crop["top1"] == pytest.approx(ref["top1"])  # the same nearest neighbour, found through Redis
    assert per_crop["top5"] >= ref["top5"] and mean["top1"] > 50
