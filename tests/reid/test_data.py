import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reid.data import DatasetError, IdentitySampler, load_images, load_market, parse_name
from reid.transforms import EmptyCropError, TrainAugment, preprocess_bgr


def test_cuhk03_counts(cuhk03):
    assert (len(cuhk03.train), len(cuhk03.query), len(cuhk03.gallery)) == (7239, 451, 487)
    assert (cuhk03.train.num_pids, cuhk03.query.num_pids, cuhk03.gallery.num_pids) == (743, 100, 100)
    assert sorted(set(cuhk03.train.labels.tolist())) == list(range(743))
    assert set(cuhk03.query.camids.tolist()) == {1} and set(cuhk03.gallery.camids.tolist()) == {2}
    assert not set(cuhk03.train.pids.tolist()) & set(cuhk03.query.pids.tolist())


def test_parse_name():
    assert parse_name(Path("0002_c1s1_000451_03.jpg")) == (2, 1)
    assert parse_name(Path("-1_c3s2_000101_00.png")) == (-1, 3)
    assert parse_name(Path("0042_c12_000003.bmp")) == (42, 12)
    with pytest.raises(DatasetError, match="IMG_0001.jpg"):
        parse_name(Path("/data/query/IMG_0001.jpg"))


def _copy_layout(src: Path, dst: Path, names: dict[str, list[tuple[str, str]]]) -> None:
    """A small Market-layout dataset of real CUHK03 crops under new names."""
    for split, pairs in names.items():
        (dst / split).mkdir(parents=True, exist_ok=True)
        for src_name, new_name in pairs:
            shutil.copy(src / split / src_name, dst / split / new_name)


def test_junk_and_distractors(cuhk03_root, tmp_path):
    train = sorted(p.name for p in (cuhk03_root / "bounding_box_train").iterdir())[:4]
    query = sorted(p.name for p in (cuhk03_root / "query").iterdir())[:3]
    gallery = sorted(p.name for p in (cuhk03_root / "bounding_box_test").iterdir())[:3]
    _copy_layout(cuhk03_root, tmp_path, {
        "bounding_box_train": [(train[0], "0001_c1s1_000001_00.jpg"), (train[1], "0001_c2s1_000002_00.jpg"),
                               (train[2], "-1_c1s1_000003_00.jpg"), (train[3], "0000_c1s1_000004_00.jpg")],
        "query": [(query[0], "0005_c1s1_000001_00.jpg"), (query[1], "0000_c1s1_000002_00.jpg"),
                  (query[2], "-1_c1s1_000003_00.jpg")],
        "bounding_box_test": [(gallery[0], "0005_c2s1_000001_00.jpg"), (gallery[1], "0000_c2s1_000002_00.jpg"),
                              (gallery[2], "-1_c2s1_000003_00.jpg")],
    })
    ds = load_market(tmp_path)
    assert ds.train.pids.tolist() == [1, 1] and ds.train.labels.tolist() == [0, 0]
    assert ds.query.pids.tolist() == [5]
    assert sorted(ds.gallery.pids.tolist()) == [0, 5]


def test_missing_empty_and_misnamed_splits(cuhk03_root, tmp_path):
    with pytest.raises(DatasetError, match="dataset folder is missing"):
        load_market(tmp_path / "nope")
    (tmp_path / "bounding_box_train").mkdir()
    with pytest.raises(DatasetError, match="bounding_box_train: split folder holds no images"):
        load_market(tmp_path)
    shutil.copy(next((cuhk03_root / "query").iterdir()), tmp_path / "bounding_box_train" / "person.jpg")
    with pytest.raises(DatasetError, match="person.jpg: file name does not follow"):
        load_market(tmp_path)
    (tmp_path / "bounding_box_train" / "person.jpg").rename(tmp_path / "bounding_box_train" / "0001_c1_0.jpg")
    with pytest.raises(DatasetError, match="query: split folder is missing"):
        load_market(tmp_path)


def test_corrupt_image_is_named(tmp_path):
    from reid.data import Sample

    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="0001_c1s1_000001_00.jpg: cannot read image"):
        load_images([Sample(bad, 1, 1)])


def test_images_decode_to_network_input(cuhk03):
    imgs = load_images(cuhk03.query.samples[:5])
    assert imgs.shape == (5, 3, 160, 64) and imgs.dtype == torch.uint8
    assert imgs.float().std() > 10  # real picture content, not a blank


def test_identity_sampler_gives_p_by_k_batches(cuhk03):
    sampler = IdentitySampler(cuhk03.train.labels, batch_size=32, num_instances=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(cuhk03.train) // 32
    for batch in batches[:50]:
        labels = cuhk03.train.labels[batch]
        ids, counts = np.unique(labels, return_counts=True)
        assert len(ids) == 8 and (counts == 4).all()
    seen = {int(cuhk03.train.labels[i]) for b in batches for i in b}
    assert len(seen) == 743  # an epoch visits every identity
    with pytest.raises(ValueError, match="multiple"):
        IdentitySampler(cuhk03.train.labels, batch_size=30, num_instances=4)


def test_train_augment_is_seeded_and_keeps_range(cuhk03):
    imgs = load_images(cuhk03.train.samples[:16])
    a = TrainAugment(pad=10, erase_p=1.0, generator=torch.Generator().manual_seed(3))(imgs)
    b = TrainAugment(pad=10, erase_p=1.0, generator=torch.Generator().manual_seed(3))(imgs)
    assert a.shape == (16, 3, 160, 64) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    torch.testing.assert_close(a, b)
    plain = imgs.float() / 255
    assert not torch.allclose(a, plain)
    # With every augmentation off, the batch is just scaled to [0, 1].
    torch.testing.assert_close(TrainAugment(flip_p=0, pad=0, erase_p=0)(imgs), plain)
    # A flip alone mirrors every image.
    torch.testing.assert_close(TrainAugment(flip_p=1.0, pad=0, erase_p=0)(imgs), plain.flip(3))


def test_preprocess_bgr_crops(cuhk03):
    import cv2

    bgr = cv2.imread(str(cuhk03.query.samples[0].path))
    x = preprocess_bgr([bgr, bgr[:50, :30]])
    assert x.shape == (2, 3, 160, 64) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1
    # channel 0 is red: BGR was swapped
    red = cv2.resize(bgr, (64, 160), interpolation=cv2.INTER_AREA)[..., 2]
    np.testing.assert_allclose(x[0, 0].mean(), red.mean() / 255, atol=1e-5)
    with pytest.raises(EmptyCropError, match="crop 1: empty"):
        preprocess_bgr([bgr, bgr[:0]])
    with pytest.raises(EmptyCropError, match="crop 0: contains NaN"):
        preprocess_bgr([np.full((10, 10, 3), np.nan, np.float32)])
    with pytest.raises(EmptyCropError, match=r"crop 0: expected an \(H, W, 3\)"):
        preprocess_bgr([bgr[..., 0]])


def test_two_datasets_keep_people_and_cameras_apart_with_validation(shared, cuhk03_root):
    """Market-1501 and cuhk03_p1 in one training set: both have a person 1 and a camera 1, which stay apart;
    validation identities leave training, give one query per camera and the rest as gallery."""
    from reid.data import CAMERA_OFFSET, load_train_set

    data = load_train_set([shared / "datasets" / "market1501", cuhk03_root], val_ids=10, seed=0)
    assert data.names == ["market1501", "cuhk03_p1"]
    assert data.train.num_pids == 751 + 743 - 20
    assert sorted(set(data.train.labels.tolist())) == list(range(data.train.num_pids))
    assert len(data.groups) == data.train.num_pids and set(data.groups.tolist()) == {0, 1}
    assert (data.groups == 0).sum() == 741  # Market's people first
    cams = data.train.camids
    assert set(cams[data.groups[data.train.labels] == 1].tolist()) == {CAMERA_OFFSET + 1, CAMERA_OFFSET + 2}
    for name, (q, g) in data.val.items():
        # (a person with one image per camera has all of them as queries: scored as queries with no match)
        assert q.num_pids == 10 and set(g.pids.tolist()) <= set(q.pids.tolist()) and g.num_pids >= 8
        per = {(p, c) for p, c in zip(q.pids.tolist(), q.camids.tolist(), strict=True)}
        assert len(per) == len(q)  # one query per person and camera
        train_pids = {s.pid for s in data.train.samples}
        assert not {s.pid + 1_000_000 * (data.names.index(name) + 1) for s in q.samples} & train_pids
    with pytest.raises(DatasetError, match="cannot hold out"):
        load_train_set([cuhk03_root], val_ids=10_000)


def test_identity_sampler_balances_datasets():
    labels = np.repeat(np.arange(30), 4)  # 30 people, 4 images each
    groups = np.array([0] * 25 + [1] * 5)  # the second dataset is five times smaller
    sampler = IdentitySampler(labels, batch_size=16, num_instances=4, seed=0, groups=groups)
    for batch in sampler:
        people = sorted({int(labels[i]) for i in batch})
        assert sum(groups[p] == 1 for p in people) == 2 and len(people) == 4
    with pytest.raises(ValueError, match="split evenly"):
        IdentitySampler(labels, batch_size=12, num_instances=4, groups=groups)


def test_unknown_pairs_follow_their_dataset(shared, cuhk03_root, tmp_path):
    """A pseudo-labelled dataset lists pairs of its ids that may be one person; they reach training as label
    pairs, offset with their dataset, and a malformed list is named."""
    import json

    from reid.data import UNKNOWN_PAIRS, load_train_set, read_split

    site = tmp_path / "site"
    site.mkdir()
    (site / "bounding_box_train").symlink_to(cuhk03_root / "bounding_box_train")
    pids = sorted({s.pid for s in read_split(site / "bounding_box_train", keep_distractors=False)})
    (site / UNKNOWN_PAIRS).write_text(json.dumps({"pairs": [[pids[0], pids[2]]]}))
    data = load_train_set([shared / "datasets" / "market1501", site])
    first = int((data.groups == 0).sum())  # Market's labels come first
    assert data.unknown.tolist() == [[first, first + 2]]
    assert len(load_train_set([shared / "datasets" / "market1501"]).unknown) == 0
    (site / UNKNOWN_PAIRS).write_text(json.dumps({"pairs": [[1]]}))
    with pytest.raises(DatasetError, match=UNKNOWN_PAIRS):
        load_train_set([site])
