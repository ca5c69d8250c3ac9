"""Tests of consensus_tutorial.data on miniature data sets generated in the official formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus_tutorial.data import (
    DATASETS,
    BatchLoader,
    ChecksumError,
    ImageSet,
    balanced_subset,
    dataset_info,
    load_dataset,
    random_crop_flip,
)

from conftest import SHARED_DATA
from fakedata import _decode_rgb, make_cifar, make_pack, make_tiny

SHARED = Path(os.environ.get("CONSENSUS_TUTORIAL_DATA", SHARED_DATA))


def _set(images: torch.Tensor, labels, name: str = "cifar10") -> ImageSet:
    k = dataset_info(name)["num_classes"]
    return ImageSet(images, torch.as_tensor(labels, dtype=torch.int64), [str(i) for i in range(k)], name,
                    "train", "generated")


# ----------------------------------------------------------------------------- arguments and constants

def test_dataset_info():
    for name in DATASETS:
        info = dataset_info(name)
        assert len(info["mean"]) == len(info["std"]) == 3
        assert all(0 < s < 0.5 for s in info["std"])
    assert dataset_info("cifar10")["padding"] == 4 and dataset_info("tiny-imagenet")["padding"] == 8
    assert dataset_info("tiny-imagenet")["image_size"] == 64
    assert dataset_info("cifar100")["num_classes"] == 100
    with pytest.raises(ValueError, match="cifar10, cifar100, tiny-imagenet"):
        dataset_info("mnist")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="cifar10, cifar100, tiny-imagenet"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("cifar10", tmp_path, "val")
    for bad in (0, -3):
        with pytest.raises(ValueError, match="limit"):
            load_dataset("cifar10", tmp_path, limit=bad)


@pytest.mark.parametrize("name", DATASETS)
def test_missing_data_message(tmp_path, name):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, tmp_path / "nothing", "test")
    msg = str(err.value)
    assert name in msg and str(tmp_path / "nothing") in msg
    assert "download=True" in msg and "CONSENSUS_TUTORIAL_DATA" in msg
    assert "shared/data" not in msg  # no folder that only exists on the build machine
    assert ("val_jpeg.npz" if name == "tiny-imagenet" else "test_jpeg.npz") in msg


# ----------------------------------------------------------------------------- official CIFAR

def test_generated_pickles_have_official_keys(tmp_path):
    make_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")  # how the official Python 2 pickles read
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(raw)
    assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape == (12, 3072)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_official_cifar_round_trip(tmp_path, name):
    train_x, train_y, test_x, test_y, classes = make_cifar(tmp_path, name)
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        with pytest.warns(UserWarning, match="not verified"):
            ds = load_dataset(name, tmp_path, split, verify_checksums=False)
        assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
        assert ds.images.shape == (len(y), 3, 32, 32)
        assert torch.equal(ds.images, torch.from_numpy(x))  # the official format is lossless
        assert torch.equal(ds.labels, torch.from_numpy(y).long())
        assert ds.classes == classes and ds.num_classes == len(classes)
        assert ds.name == name and ds.split == split and ds.image_size == 32
        assert ds.source.startswith("official layout at") and str(tmp_path) in ds.source
        assert ds.mean == dataset_info(name)["mean"] and ds.std == dataset_info(name)["std"]


def test_official_cifar_folder_as_root(tmp_path):
    _, _, test_x, _, _ = make_cifar(tmp_path / "cifar10")
    for root in (tmp_path, tmp_path / "cifar10" / "cifar-10-batches-py"):
        with pytest.warns(UserWarning):
            ds = load_dataset("cifar10", root, "test", verify_checksums=False)
        assert torch.equal(ds.images, torch.from_numpy(test_x))


def test_checksums_are_verified_by_default(tmp_path):
    make_cifar(tmp_path)
    with pytest.raises(ChecksumError, match="verify_checksums=False") as err:
        load_dataset("cifar10", tmp_path, "test")
    assert "data_batch_1" in str(err.value) and "batches.meta" in str(err.value)


def test_incomplete_official_layout_is_reported(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing data_batch_3"):
        load_dataset("cifar10", tmp_path, verify_checksums=False)


def test_limit_on_official_cifar(tmp_path):
    train_x, train_y, *_ = make_cifar(tmp_path, n_per_file=40)
    with pytest.warns(UserWarning):
        ds = load_dataset("cifar10", tmp_path, limit=50, seed=3, verify_checksums=False)
    idx = balanced_subset(train_y, 50, seed=3, num_classes=10)
    assert torch.equal(ds.images, torch.from_numpy(train_x[idx]))
    assert torch.equal(ds.labels, torch.from_numpy(train_y[idx]).long())


# ----------------------------------------------------------------------------- official Tiny ImageNet

def test_official_tiny_imagenet(tmp_path):
    d = make_tiny(tmp_path)
    classes = ["n01", "n02", "n03"]
    for root in (tmp_path, d):
        train = load_dataset("tiny-imagenet", root, "train")
        assert train.classes == classes and train.images.shape == (9, 3, 64, 64)
        assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert train.class_words == [f"words for {w}" for w in classes]
        first = _decode_rgb(d / "train" / "n02" / "images" / "n02_0.JPEG")  # a greyscale file
        assert torch.equal(train.images[3], torch.from_numpy(first).permute(2, 0, 1))
    val = load_dataset("tiny-imagenet", tmp_path, "test")
    assert val.split == "test" and "val" in val.source
    assert val.labels.tolist() == [1, 2, 0, 2, 1]  # from val_annotations.txt
    for i in range(5):
        ref = _decode_rgb(d / "val" / "images" / f"val_{i}.JPEG")
        assert torch.equal(val.images[i], torch.from_numpy(ref).permute(2, 0, 1))
    sub = load_dataset("tiny-imagenet", tmp_path, "train", limit=3)
    assert sorted(sub.labels.tolist()) == [0, 1, 2]


# ----------------------------------------------------------------------------- JPEG packs

def test_jpeg_pack_round_trip(tmp_path):
    classes = [f"c{i}" for i in range(10)]
    y = np.arange(30) % 10
    files = make_pack(tmp_path / "cifar10" / "test_jpeg.npz", y, classes)
    ref = torch.from_numpy(np.stack([_decode_rgb(f) for f in files])).permute(0, 3, 1, 2)
    for root in (tmp_path, tmp_path / "cifar10"):
        ds = load_dataset("cifar10", root, "test")
        assert ds.source == f"JPEG pack at {tmp_path / 'cifar10' / 'test_jpeg.npz'}"
        assert ds.classes == classes and torch.equal(ds.labels, torch.from_numpy(y))
        assert torch.equal(ds.images, ref)
    sub = load_dataset("cifar10", tmp_path, "test", limit=12, seed=1)
    again = load_dataset("cifar10", tmp_path, "test", limit=12, seed=1)
    other = load_dataset("cifar10", tmp_path, "test", limit=12, seed=2)
    assert torch.equal(sub.images, again.images) and torch.equal(sub.labels, again.labels)
    assert not torch.equal(sub.labels, other.labels) or not torch.equal(sub.images, other.images)
    assert sorted(np.bincount(sub.labels.numpy(), minlength=10).tolist()) == [1] * 8 + [2] * 2
    idx = balanced_subset(y, 12, seed=1, num_classes=10)
    assert torch.equal(sub.images, ref[idx])
    assert len(load_dataset("cifar10", tmp_path, "test", limit=1000)) == 30


def test_pack_takes_precedence_and_is_checked(tmp_path):
    make_cifar(tmp_path)
    make_pack(tmp_path / "test_jpeg.npz", np.arange(20) % 10, [f"c{i}" for i in range(10)])
    assert load_dataset("cifar10", tmp_path, "test").source.startswith("JPEG pack")
    with pytest.raises(FileNotFoundError, match="holds 10 classes"):  # not mistaken for CIFAR-100
        load_dataset("cifar100", tmp_path, "test")


def test_tiny_imagenet_pack_names(tmp_path):
    wnids = [f"n{i:08d}" for i in range(200)]
    make_pack(tmp_path / "tiny-imagenet-200" / "val_jpeg.npz", np.arange(4) * 50, wnids, size=64)
    ds = load_dataset("tiny-imagenet", tmp_path, "test")
    assert ds.images.shape == (4, 3, 64, 64) and ds.labels.tolist() == [0, 50, 100, 150]


def test_shared_cifar10_test_pack():
    if not (SHARED / "cifar10" / "test_jpeg.npz").is_file():
        pytest.skip(f"no shared data at {SHARED} (set CONSENSUS_TUTORIAL_DATA)")
    ds = load_dataset("cifar10", SHARED, "test", limit=200)
    assert ds.images.shape == (200, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels, minlength=10).tolist() == [20] * 10
    assert ds.classes[:3] == ["airplane", "automobile", "bird"]
    assert 60 < ds.images.float().mean() < 160


# ----------------------------------------------------------------------------- balanced subsets

@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 30), min_size=1, max_size=12), n=st.integers(1, 400),
       seed=st.integers(0, 2**32 - 1))
def test_balanced_subset(counts, n, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(labels)
    if len(labels) == 0:
        assert len(balanced_subset(labels, n, seed=seed, num_classes=len(counts))) == 0
        return
    idx = balanced_subset(labels, n, seed=seed, num_classes=len(counts))
    assert len(idx) == min(n, len(labels)) and len(set(idx.tolist())) == len(idx)
    got = np.bincount(labels[idx], minlength=len(counts))
    assert (got <= counts).all()
    top = got.max()
    assert all(g == c or g >= top - 1 for g, c in zip(got, counts))  # as equal as the data allow
    assert np.array_equal(idx, balanced_subset(labels, n, seed=seed, num_classes=len(counts)))


# ----------------------------------------------------------------------------- batches

def test_random_crop_flip():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).reshape(2, 3, 5, 5)
    p = 2
    same = random_crop_flip(x, torch.tensor([p, p]), torch.tensor([p, p]), torch.tensor([False, False]), p)
    assert torch.equal(same, x)
    flipped = random_crop_flip(x, torch.tensor([p, p]), torch.tensor([p, p]), torch.tensor([True, False]), p)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    shifted = random_crop_flip(x, torch.tensor([0, 4]), torch.tensor([1, 2]), torch.tensor([False, True]), p)
    ref = torch.nn.functional.pad(x, (p, p, p, p))
    assert torch.equal(shifted[0], ref[0, :, 0:5, 1:6])
    assert torch.equal(shifted[1], ref[1, :, 4:9, 2:7].flip(-1))


def _random_set(n: int = 100, name: str = "cifar10", seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    size = dataset_info(name)["image_size"]
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return _set(images, torch.arange(n) % 10, name)


def test_batch_shapes_and_len():
    data = _random_set(100)
    train = BatchLoader(data, 32, train=True)
    test = BatchLoader(data, 32, train=False)
    assert len(train) == 3 and len(test) == 4
    assert len(BatchLoader(data, 32, train=True, drop_last=False)) == 4
    assert len(BatchLoader(data, 25, train=True)) == 4
    batches = list(train)
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert [len(y) for _, y in test] == [32, 32, 32, 4]
    x, _ = next(iter(BatchLoader(data, 8, train=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert BatchLoader(_random_set(4, "tiny-imagenet"), 2, train=True).padding == 8


def test_eval_normalisation_and_order():
    data = _set(torch.full((6, 3, 32, 32), 128, dtype=torch.uint8), torch.arange(6))
    mean, std = torch.tensor(data.mean), torch.tensor(data.std)
    expected = (128 / 255 - mean) / std
    xs, ys = zip(*BatchLoader(data, 4, train=False))
    x = torch.cat(xs)
    assert torch.allclose(x, expected.view(1, 3, 1, 1).expand_as(x), atol=1e-5)
    assert torch.cat(ys).tolist() == list(range(6))


def test_train_augments_and_keeps_labels():
    data = _random_set(100)
    loader = BatchLoader(data, 10, train=True, drop_last=False)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.std).view(1, 3, 1, 1) * 255
    x, y = map(torch.cat, zip(*loader))
    assert sorted(y.tolist()) == sorted(data.labels.tolist())  # a permutation of the data set
    order, *_ = loader.plan(0)
    assert torch.equal(y, data.labels[order])
    plain = (data.images[order].float() - mean) / std
    changed = (x - plain).abs().flatten(1).amax(1) > 1e-4
    assert changed.float().mean() > 0.8  # 1 / 18 of the crops are unshifted and unflipped
    # pixels are the original pixels (moved) or the zero padding
    zero = (0 - mean) / std
    px = x.permute(0, 2, 3, 1).reshape(-1, 3)
    is_pad = torch.isclose(px, zero.view(1, 3)).all(1)
    assert 0 < is_pad.float().mean() < 0.3


def test_determinism_and_resume():
    data = _random_set(64)

    def epoch(loader):
        return [(x.clone(), y.clone()) for x, y in loader]

    a = BatchLoader(data, 16, train=True, seed=5)
    b = BatchLoader(data, 16, train=True, seed=5)
    a0, b0 = epoch(a), epoch(b)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a0, b0))
    state = a.state_dict()
    assert state["epoch"] == 1
    a1 = epoch(a)
    assert not torch.equal(a0[0][1], a1[0][1]) or not torch.equal(a0[0][0], a1[0][0])
    resumed = BatchLoader(data, 16, train=True, seed=0)
    resumed.load_state_dict(state)
    r1 = epoch(resumed)
    assert all(torch.equal(x1, xr) and torch.equal(y1, yr) for (x1, y1), (xr, yr) in zip(a1, r1))
    c = BatchLoader(data, 16, train=True, seed=6)
    assert not torch.equal(epoch(c)[0][0], a0[0][0])
    with pytest.raises(ValueError, match="samples"):
        BatchLoader(_random_set(10), 4, train=True).load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_batches_on_cuda():
    data = _random_set(64)
    cpu = [(x, y) for x, y in BatchLoader(data, 16, train=True, seed=2)]
    gpu = [(x.cpu(), y.cpu()) for x, y in BatchLoader(data, 16, train=True, seed=2, device="cuda")]
    assert all(torch.allclose(a, b, atol=1e-6) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(cpu, gpu))


# ----------------------------------------------------------------------------- downloads (no network)

class _Called(Exception):
    pass


def test_download_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.utils as tv_utils

    def fake_cifar(url, download_root, *args, **kwargs):
        raise _Called(url, download_root)

    def fake_tiny(url, download_root, *args, **kwargs):
        assert url == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
        make_tiny(Path(download_root))

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_cifar)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_tiny)
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10", tmp_path / "c", download=False)
    with pytest.raises(_Called) as called:
        load_dataset("cifar10", tmp_path / "c", download=True)
    assert called.value.args == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", str(tmp_path / "c"))
    ds = load_dataset("tiny-imagenet", tmp_path / "t", "test", download=True)
    assert len(ds) == 5 and (tmp_path / "t" / "tiny-imagenet-200" / "wnids.txt").is_file()


def test_image_set_validation():
    with pytest.raises(ValueError, match="uint8"):
        _set(torch.zeros(2, 3, 32, 32), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        _set(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="unknown dataset"):
        ImageSet(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), ["a"], "mnist",
                 "train", "x")
    s = _random_set(10).subset([3, 1])
    assert s.labels.tolist() == [3, 1] and "n=2" in repr(s)


def test_an_iterator_that_is_never_read_does_not_skip_an_epoch():
    """tqdm.auto calls iter() in its constructor and again to iterate: epoch 0 must still
    be the first epoch trained, with the augmentation of epoch 0."""
    from tqdm.auto import tqdm

    data = _set(torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), list(range(8)))
    loader = BatchLoader(data, 4, train=True, seed=3)
    expected = [x for x, _ in BatchLoader(data, 4, train=True, seed=3)]
    seen = [x for x, _ in tqdm(loader, disable=True)]
    assert loader.epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(seen, expected))
