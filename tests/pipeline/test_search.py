"""pipeline.search: by photo and by identity against a finished run's own Redis, clear errors for bad photos, and a
small version of benchmarks/search_accuracy.py (top-1 of the search is reid's Rank-1 on the same embeddings)."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from pipeline.config import ReidConfig
from pipeline.search import main
from reid.identity.album import Album, Appearance
from reid.identity.config import RedisConfig
from reid.identity.matcher import TrackSummary, new_identity
from reid.identity.redis_server import EmbeddedRedis
from reid.identity.store import IdentityStore
from reid.paths import PROJECT_ROOT
from trt_engines.embedder import build_embedder


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
        store = IdentityStore.from_config(RedisConfig(), server.url)
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
