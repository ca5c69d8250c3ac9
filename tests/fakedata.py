"""Generators of miniature data sets in the official formats (CIFAR pickles, the Tiny
ImageNet zip layout) and in the JPEG-pack format of ../shared/data, for the tests."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


class _Py2Str(bytes):
    """Bytes that pickle as a Python 2 ``str``, like the keys of the official CIFAR pickles."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, so dispatch can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + bytes(obj))
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _dump_py2(obj: dict, path: Path) -> None:
    def conv(v):
        if isinstance(v, str):
            return _Py2Str(v.encode())
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump({_Py2Str(k.encode()): conv(v) for k, v in obj.items()})


def make_cifar(root: Path, name: str = "cifar10", n_per_file: int = 12, n_test: int = 15, seed: int = 0):
    """Official cifar-10-batches-py / cifar-100-python folder under ``root``.

    Returns (train_x, train_y, test_x, test_y, classes), x uint8 (N, 3, 32, 32).
    """
    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100
    classes = [f"class_{i:02d}" for i in range(k)]
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(n: int, path: Path, title: str):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, k, n).tolist()
        entry = {"batch_label": title, label_key: y, "data": x.reshape(n, 3072),
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        if name == "cifar100":
            entry["coarse_labels"] = [v // 5 for v in y]
        _dump_py2(entry, path)
        return x, np.asarray(y)

    if name == "cifar10":
        parts = [batch(n_per_file, folder / f"data_batch_{i}", f"training batch {i} of 5") for i in range(1, 6)]
        test = batch(n_test, folder / "test_batch", "testing batch 1 of 1")
        _dump_py2({"label_names": classes, "num_cases_per_batch": n_per_file, "num_vis": 3072},
                  folder / "batches.meta")
    else:
        parts = [batch(5 * n_per_file, folder / "train", "training batch 1 of 1")]
        test = batch(n_test, folder / "test", "testing batch 1 of 1")
        _dump_py2({"fine_label_names": classes, "coarse_label_names": [f"super_{i}" for i in range(20)]},
                  folder / "meta")
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    return train_x, train_y, test[0], test[1], classes


def _jpeg(rng: np.random.Generator, size: int, mode: str = "RGB") -> bytes:
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _decode_rgb(data: bytes | Path) -> np.ndarray:
    """Reference decoding, as in shared/data/README.md: (H, W, 3) uint8."""
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    return np.array(Image.open(src).convert("RGB"))


def make_tiny(root: Path, wnids=("n03", "n01", "n02"), n_train: int = 3, seed: int = 0):
    """Unzipped tiny-imagenet-200 layout with a few classes; returns the folder."""
    rng = np.random.default_rng(seed)
    d = root / "tiny-imagenet-200"
    (d / "val" / "images").mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (d / "words.txt").write_text("".join(f"{w}\twords for {w}\n" for w in wnids) + "n99\tunused\n")
    for w in wnids:
        (d / "train" / w / "images").mkdir(parents=True)
        (d / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(n_train):
            mode = "L" if i == 0 else "RGB"  # greyscale images exist in the real data set
            (d / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(_jpeg(rng, 64, mode))
    lines = []
    for i, w in enumerate(["n02", "n03", "n01", "n03", "n02"]):
        (d / "val" / "images" / f"val_{i}.JPEG").write_bytes(_jpeg(rng, 64, "L" if i == 1 else "RGB"))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return d


def make_pack(path: Path, labels: np.ndarray, classes: list[str], size: int = 32, seed: int = 0) -> list[bytes]:
    """A JPEG pack in the shared/data format; returns the JPEG files."""
    rng = np.random.default_rng(seed)
    files = [_jpeg(rng, size) for _ in labels]
    offsets = np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, jpeg=np.frombuffer(b"".join(files), np.uint8), offsets=offsets,
             y=np.asarray(labels, np.int64), classes=np.asarray(classes))
    return files
