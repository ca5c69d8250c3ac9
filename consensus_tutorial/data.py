"""Image data sets as uint8 tensors, and a batch loader that augments whole batches.

The whole data set is decoded once into one uint8 tensor of shape (N, 3, H, W) (CIFAR-10
train: 150 MB; it fits in host or GPU memory), so training never touches PIL or files.
:class:`BatchLoader` then shuffles, pads, crops, flips and normalises batches with a few
tensor operations on the device where the images live.

Three data sets: ``"cifar10"``, ``"cifar100"``, ``"tiny-imagenet"``. A data root may
hold any of these formats; :func:`load_dataset` tries them in this order and
:attr:`ImageSet.source` says which one it used:

1. JPEG packs (``train_jpeg.npz``, ``test_jpeg.npz``; Tiny ImageNet: ``val_jpeg.npz``)
   directly in the root or in ``root/cifar10``, ``root/cifar100``,
   ``root/tiny-imagenet-200``. Each is an ``np.savez`` archive with keys ``jpeg`` (all
   JPEG files concatenated, uint8), ``offsets`` (int64, N+1; image i is
   ``jpeg[offsets[i]:offsets[i+1]]``), ``y`` (int64 labels) and ``classes``; optionally
   ``class_words``. They are read with ``allow_pickle=False``.
2. The official layouts: ``cifar-10-batches-py/`` and ``cifar-100-python/`` (checked
   against their published md5 sums, then read by a restricted unpickler that accepts
   only the types those files hold, so a data file can never run code), and the unzipped
   ``tiny-imagenet-200/`` folder (``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
   ``val/images/*.JPEG``, ``val/val_annotations.txt``).

Nothing is downloaded unless ``download=True`` is passed (torchvision fetches CIFAR).
Every problem with a data file raises :class:`DataError` naming the file.

Where data is looked for (:func:`data_root`): the folder passed in, else
``$CONSENSUS_TUTORIAL_DATA``, else ``~/.cache/consensus-tutorial/data``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import functools
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "DATASETS",
    "SPLITS",
    "ChecksumError",
    "ImageSet",
    "BatchLoader",
    "dataset_info",
    "load_dataset",
    "balanced_subset",
    "random_crop_flip",
]

DATASETS = ("cifar10", "cifar100", "tiny-imagenet")
SPLITS = ("train", "test")

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"

# Per-channel statistics of each training set, in [0, 1] units, as usually published.
# For CIFAR-10 these are the std over all pixels (0.2470, ...), not the often copied
# (0.2023, 0.1994, 0.2010), which is an average of per-image stds.
_INFO: dict[str, dict[str, Any]] = {
    "cifar10": dict(
        num_classes=10, image_size=32, padding=4,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        folder="cifar10", official="cifar-10-batches-py",
    ),
    "cifar100": dict(
        num_classes=100, image_size=32, padding=4,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        folder="cifar100", official="cifar-100-python",
    ),
    "tiny-imagenet": dict(
        num_classes=200, image_size=64, padding=8,
        mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
        folder="tiny-imagenet-200", official="tiny-imagenet-200",
    ),
}


DATA_ENV = "CONSENSUS_TUTORIAL_DATA"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data is looked for: ``root`` if given, else ``$CONSENSUS_TUTORIAL_DATA``,
    else ``~/.cache/consensus-tutorial/data``."""
    if root:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path.home() / ".cache" / "consensus-tutorial" / "data"


class DataError(ValueError):
    """A data file or folder that cannot be used; the message names it and says what to do."""


class ChecksumError(DataError, RuntimeError):
    """The official files are present but their md5 checksums are not the published ones."""


def dataset_info(name: str) -> dict[str, Any]:
    """Constants of a data set.

    Returns a new dict with ``num_classes`` (int), ``image_size`` (int, images are square),
    ``mean`` and ``std`` (3-tuples of per-channel statistics in [0, 1] units), ``padding``
    (int, zero padding of the random-crop augmentation: an eighth of the image size),
    ``folder`` (sub-folder name searched for JPEG packs) and ``official`` (folder name of
    the official layout).
    """
    if name not in _INFO:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return dict(_INFO[name])


@dataclass(repr=False)
class ImageSet:
    """A labelled image data set held in memory.

    Attributes:
        images: uint8 tensor (N, 3, H, W), contiguous, RGB.
        labels: int64 tensor (N,), values in ``range(len(classes))``.
        classes: class names in label order (CIFAR: words; Tiny ImageNet: wnids).
        name: data set name, one of ``DATASETS``.
        split: ``"train"`` or ``"test"``.
        source: which format was read, and from where.
        class_words: readable class names where the source has them (Tiny ImageNet).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    source: str
    class_words: list[str] | None = None

    def __post_init__(self) -> None:
        if self.name not in _INFO:
            raise ValueError(f"unknown dataset {self.name!r}; expected one of {', '.join(DATASETS)}")
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64).contiguous()
        self.classes = [str(c) for c in self.classes]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        """Side length H (= W) of the images in pixels."""
        return int(self.images.shape[-1])

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the data set's training images, in [0, 1] units."""
        return _INFO[self.name]["mean"]

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the data set's training images, in [0, 1] units."""
        return _INFO[self.name]["std"]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """A new ImageSet with the rows ``indices`` (in that order)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSet(self.images[idx], self.labels[idx], list(self.classes), self.name,
                        self.split, self.source, self.class_words)

    def __repr__(self) -> str:
        return (f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, classes={self.num_classes}, source={self.source!r})")


# ----------------------------------------------------------------------------- subsets

def balanced_subset(labels: np.ndarray | torch.Tensor | Sequence[int], n: int, *, seed: int = 0,
                    num_classes: int | None = None) -> np.ndarray:
    """Indices of a class-balanced random subset of ``n`` samples, in shuffled order.

    Every class gets ``n // C`` samples; the ``n % C`` left over go one each to classes
    picked at random (by ``seed``). A class with too few samples gives all it has and
    the shortfall is shared among the others, so the result always has
    ``min(n, len(labels))`` distinct indices. Deterministic in ``(labels, n, seed)``.

    Args:
        labels: int labels, shape (N,).
        n: subset size, > 0.
        seed: random seed (>= 0).
        num_classes: number of classes C (default: ``max(labels) + 1``).
    Returns:
        int64 array of shape (min(n, N),).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if n <= 0:
        raise ValueError(f"subset size must be > 0, got {n}")
    rng = np.random.default_rng(seed)
    c = int(num_classes if num_classes is not None else (labels.max() + 1 if len(labels) else 0))
    counts = np.bincount(labels, minlength=c)
    # water-filling: classes smaller than their share give all they have
    quota = np.zeros_like(counts)
    remaining = min(n, len(labels))
    active = np.flatnonzero(counts > 0)
    while remaining > 0 and len(active):
        share = remaining // len(active)
        small = active[counts[active] <= share]
        if len(small) == 0:
            quota[active] = share
            extra = rng.permutation(active)[: remaining - share * len(active)]
            quota[extra] += 1
            break
        quota[small] = counts[small]
        remaining -= int(counts[small].sum())
        active = np.setdiff1d(active, small)
    chosen = [rng.permutation(np.flatnonzero(labels == k))[: quota[k]] for k in range(c) if quota[k]]
    out = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return rng.permutation(out).astype(np.int64)


def _select(labels: np.ndarray, num_classes: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of the ``limit`` subset, or None for "everything in the original order"."""
    if limit is None or limit >= len(labels):
        return None
    return balanced_subset(labels, limit, seed=seed, num_classes=num_classes)


# ----------------------------------------------------------------------------- decoding

def _decode(sources: Sequence[Any], size: int, what: str, formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Decode images (paths or bytes-like) with PIL into a uint8 array (N, size, size, 3)."""
    from tqdm.auto import tqdm

    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    for i, src in enumerate(tqdm(sources, desc=f"decoding {what}", unit="img", leave=False,
                                 disable=len(sources) < 20000)):
        fp = io.BytesIO(src) if not isinstance(src, (str, os.PathLike)) else src
        try:
            with Image.open(fp, formats=formats) as im:
                if im.mode != "RGB":
                    im = im.convert("RGB")  # greyscale (and CMYK) to RGB
                if im.size != (size, size):
                    raise DataError(f"{what}: image {i} is {im.size[0]}x{im.size[1]}, expected {size}x{size}")
                out[i] = np.asarray(im)
        except (OSError, SyntaxError) as e:  # PIL: unidentified or truncated image data
            raise DataError(f"{what}: image {i} cannot be decoded ({e}); the file is damaged: "
                            "replace it with a fresh copy.") from None
    return out


def _to_nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


# ----------------------------------------------------------------------------- JPEG packs

def _pack_name(name: str, split: str) -> str:
    return "val_jpeg.npz" if (name == "tiny-imagenet" and split == "test") else f"{split}_jpeg.npz"


def _open_pack(path: Path):
    """``np.load`` of a pack, with a clear error for a damaged or empty file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable JPEG pack ({e or type(e).__name__}); replace it with a "
                        "fresh copy, or delete it to use the official layout.") from None


def _pack_mismatch(path: Path, name: str) -> str | None:
    """Why the pack at ``path`` cannot be data set ``name`` (None if it can)."""
    with _open_pack(path) as a:
        missing = {"jpeg", "offsets", "y", "classes"} - set(a.files)
        if missing:
            return f"not a JPEG pack: missing keys {sorted(missing)}"
        k = len(a["classes"])
    if k != _INFO[name]["num_classes"]:
        return f"holds {k} classes, {name} has {_INFO[name]['num_classes']}"
    return None


def _read_pack(path: Path, name: str, split: str, limit: int | None, seed: int) -> ImageSet:
    try:
        with _open_pack(path) as a:
            offsets = a["offsets"].astype(np.int64)
            y = a["y"].astype(np.int64)
            classes = [str(c) for c in a["classes"]]
            words = [str(w) for w in a["class_words"]] if "class_words" in a.files else None
            jpeg = a["jpeg"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is damaged ({e}); replace it with a fresh copy.") from None
    if len(offsets) != len(y) + 1:
        raise DataError(f"{path}: offsets has {len(offsets)} entries, expected len(y) + 1 = {len(y) + 1}")
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise DataError(f"{path}: labels must lie in [0, {len(classes)}) (one per class); found "
                        f"[{y.min()}, {y.max()}]. Replace the file with a fresh copy.")
    idx = _select(y, len(classes), limit, seed)
    rows = np.arange(len(y)) if idx is None else idx
    buf = memoryview(jpeg)
    blobs = [buf[offsets[i]:offsets[i + 1]] for i in rows.tolist()]
    images = _decode(blobs, _INFO[name]["image_size"], f"{path.name}", formats=("JPEG",))
    return ImageSet(_to_nchw(images), torch.from_numpy(y[rows]), classes, name, split,
                    f"JPEG pack at {path}", words)


# ----------------------------------------------------------------------------- official CIFAR

@functools.lru_cache(maxsize=None)
def _cifar_classes() -> dict[str, type]:
    """torchvision's dataset classes: they download the official files (the package
    reads them itself, with :class:`_CifarUnpickler`)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}


class _CifarUnpickler(pickle.Unpickler):
    """Reads the official CIFAR python batches, and nothing else: their pickles hold dicts,
    lists, strings, bytes, ints and numpy arrays, so every other global a file names is
    refused. A hostile file in a data folder can therefore not run code."""

    _ALLOWED = {
        (module, name)
        for core in ("numpy.core", "numpy._core")
        for module, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                             (f"{core}.numeric", "_frombuffer"))
    } | {("numpy", "ndarray"), ("numpy", "dtype"),
         # protocol-2 pickles written by Python 3 carry an array's bytes as latin-1 text
         ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: an official CIFAR batch holds only lists, strings and "
                "numpy arrays (this file is not one; the package never runs code from a data file)")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> dict:
    """One official CIFAR python batch (or meta) file as a dict with ``str`` keys, read by
    the restricted :class:`_CifarUnpickler`."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a readable official CIFAR batch ({e}); delete the folder and "
                         "download it again (--download), or use the JPEG packs.") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not an official CIFAR batch (it holds a {type(entry).__name__}, not a dict).")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _cifar_files(name: str) -> list[tuple[str, str]]:
    """(filename, md5) of every file torchvision needs for either split, meta file last."""
    cls = _cifar_classes()[name]
    return [(f, m) for f, m in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]


def _find_official_cifar(name: str, root: Path, searched: list[str]) -> Path | None:
    """The parent folder of ``cifar-10-batches-py`` / ``cifar-100-python``, if complete."""
    base = _INFO[name]["official"]
    parents = [root.parent] if root.name == base else []
    parents += [root, root / _INFO[name]["folder"]]
    for parent in parents:
        folder = parent / base
        missing = [f for f, _ in _cifar_files(name) if not (folder / f).is_file()]
        if not folder.is_dir():
            searched.append(f"{folder}/")
        elif missing:
            searched.append(f"{folder}/ (incomplete: missing {', '.join(missing)})")
        else:
            return parent
    return None


def _verify_cifar(name: str, folder: Path, verify: bool) -> None:
    """Compare every official file with its published md5, or warn that it was not done."""
    if not verify:
        warnings.warn(f"{name}: checksums of the files in {folder} were not verified "
                      "(verify_checksums=False)", UserWarning, stacklevel=4)
        return
    from torchvision.datasets.utils import check_integrity

    bad = [f for f, md5 in _cifar_files(name) if not check_integrity(str(folder / f), md5)]
    if bad:
        raise ChecksumError(
            f"{name}: md5 checksums of {', '.join(bad)} in {folder} differ from the published ones. If "
            "these are copies you trust (for example files generated for tests), pass verify_checksums=False "
            "(--no-verify-checksums) to read them anyway; otherwise delete the folder and pass download=True.")


def _read_official_cifar(name: str, parent: Path, split: str, verify: bool, limit: int | None,
                         seed: int) -> ImageSet:
    cls = _cifar_classes()[name]
    folder = parent / _INFO[name]["official"]
    _verify_cifar(name, folder, verify)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    meta = read_cifar_batch(folder / cls.meta["filename"])
    classes = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in meta[cls.meta["key"]]]
    data, labels = [], []
    for fname, _ in cls.train_list if split == "train" else cls.test_list:
        entry = read_cifar_batch(folder / fname)
        try:
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        except (KeyError, ValueError) as e:
            raise DataError(f"{folder / fname} is not an official {name} batch ({e!r} missing or malformed).") from None
    x, y = np.concatenate(data), np.concatenate(labels)
    if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= len(classes))):
        raise DataError(f"{folder}: labels must be {len(x)} integers in [0, {len(classes)}); "
                         f"found {len(y)} in [{y.min()}, {y.max()}]. Download the data set again.")
    idx = _select(y, len(classes), limit, seed)
    x = x if idx is None else x[idx]
    y = y if idx is None else y[idx]
    return ImageSet(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes, name, split,
                    f"official layout at {folder}")


# ----------------------------------------------------------------------------- official Tiny ImageNet

def _find_official_tiny(root: Path, split: str, searched: list[str]) -> Path | None:
    need = "train" if split == "train" else os.path.join("val", "val_annotations.txt")
    candidates = [root / "tiny-imagenet-200", root]
    for d in candidates:
        if (d / "wnids.txt").is_file() and (d / need).exists():
            return d
        searched.append(f"{d}/ (wnids.txt, {need})")
    return None


def _read_official_tiny(folder: Path, split: str, limit: int | None, seed: int) -> ImageSet:
    wnids = sorted({w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            d = folder / "train" / w / "images"
            d = d if d.is_dir() else folder / "train" / w
            if not d.is_dir():
                raise FileNotFoundError(f"{folder / 'train' / w / 'images'} not found (wnids.txt lists {w})")
            found = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
            files += found
            labels += [index[w]] * len(found)
    else:
        for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
            if not line.strip():
                continue
            fname, wnid = line.split("\t")[:2]
            if wnid not in index:
                raise ValueError(f"{folder / 'val' / 'val_annotations.txt'}: unknown wnid {wnid!r} for {fname}")
            files.append(folder / "val" / "images" / fname)
            labels.append(index[wnid])
    words = None
    if (folder / "words.txt").is_file():
        table = dict(line.split("\t", 1) for line in (folder / "words.txt").read_text().splitlines() if "\t" in line)
        words = [table.get(w, w).strip() for w in wnids]
    y = np.asarray(labels, dtype=np.int64)
    idx = _select(y, len(wnids), limit, seed)
    rows = np.arange(len(y)) if idx is None else idx
    images = _decode([files[i] for i in rows.tolist()], 64, f"tiny-imagenet {split}")
    split_dir = "train" if split == "train" else "val"
    return ImageSet(_to_nchw(images), torch.from_numpy(y[rows]), wnids, "tiny-imagenet", split,
                    f"official layout at {folder} ({split_dir}/)", words)


# ----------------------------------------------------------------------------- entry point

def _download(name: str, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    try:
        if name == "tiny-imagenet":
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5)
        else:
            _cifar_classes()[name](str(root), train=True, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise DataError(f"could not download {name} into {root} ({e}). Without a network, put the files "
                        "there yourself in one of the layouts the error without --download lists.") from None


def _missing_message(name: str, root: Path, split: str, searched: list[str]) -> str:
    info = _INFO[name]
    pack = _pack_name(name, split)
    if name == "tiny-imagenet":
        layout = (f"root/tiny-imagenet-200/ (or the root itself) with wnids.txt, train/<wnid>/images/*.JPEG, "
                  f"val/images/*.JPEG and val/val_annotations.txt (the unzipped {TINY_IMAGENET_URL})")
    else:
        files = ", ".join(f for f, _ in _cifar_files(name))
        layout = f"root/{info['official']}/ with {files} (the extracted torchvision archive)"
    return (
        f"{name} ({split} split) not found under {root}. Searched:\n  " + "\n  ".join(searched) + "\n"
        f"Expected either a JPEG pack {pack} in the root or in root/{info['folder']}/, or the official "
        f"layout: {layout}.\n"
        f"To get it, pass download=True (--download on the command line) to download the official files "
        f"into {root}, or point the root (--data-root, or $CONSENSUS_TUTORIAL_DATA) at a folder that holds "
        f"one of these layouts."
    )


def _find_pack(name: str, root: Path, split: str, searched: list[str]) -> Path | None:
    """The first usable JPEG pack of ``name``/``split`` in ``root`` or its sub-folder, or None;
    every place looked at (and why a pack there was skipped) is added to ``searched``."""
    pack = _pack_name(name, split)
    for d in (root, root / _INFO[name]["folder"]):
        path = d / pack
        if not path.is_file():
            searched.append(str(path))
            continue
        why = _pack_mismatch(path, name)
        if why is None:
            return path
        searched.append(f"{path} (skipped: {why})")
    return None


def load_dataset(name: str, root: str | os.PathLike, split: str = "train", *, download: bool = False,
                 limit: int | None = None, seed: int = 0, verify_checksums: bool = True) -> ImageSet:
    """Load a whole split of a data set into memory as uint8 tensors.

    Args:
        name: ``"cifar10"``, ``"cifar100"`` or ``"tiny-imagenet"``.
        root: folder holding the data in one of the formats described in the module
            docstring (searched in that order: JPEG packs, then official layouts).
        split: ``"train"`` or ``"test"``. For Tiny ImageNet ``"test"`` is the labelled
            val split (10,000 images, 50 per class): the official test split has no labels.
        download: if the data are not found, download the official files into ``root``
            (CIFAR through torchvision, Tiny ImageNet from the cs231n zip). Never otherwise.
        limit: if given, a class-balanced random subset of this many images (see
            ``balanced_subset``), drawn with ``seed``, in shuffled order; only those
            images are decoded. If ``limit >= len(split)`` the whole split is returned in
            its original order.
        seed: seed of the ``limit`` subset.
        verify_checksums: compare the official CIFAR files with their published md5
            checksums (torchvision does this). ``False`` reads files whose checksums differ
            (generated or re-packed files) and warns that they were not verified.
    Returns:
        An :class:`ImageSet` with images uint8 (N, 3, H, W) and labels int64 (N,).
    Raises:
        ValueError: unknown ``name``, ``split`` not in ("train", "test"), or ``limit <= 0``.
        FileNotFoundError: no data found and ``download`` is False.
        consensus_tutorial.data.ChecksumError: official CIFAR files with wrong checksums and ``verify_checksums``.
    """
    if name not in _INFO:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and (int(limit) != limit or limit <= 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    root = Path(root).expanduser()
    searched: list[str] = []

    path = _find_pack(name, root, split, searched)
    if path is not None:
        return _read_pack(path, name, split, limit, seed)

    def find() -> Path | None:
        if name == "tiny-imagenet":
            return _find_official_tiny(root, split, searched)
        return _find_official_cifar(name, root, searched)

    found = find()
    if found is None and download:
        _download(name, root)
        found = find()
    if found is None:
        raise FileNotFoundError(_missing_message(name, root, split, searched))
    if name == "tiny-imagenet":
        return _read_official_tiny(found, split, limit, seed)
    return _read_official_cifar(name, found, split, verify_checksums, limit, seed)


# ----------------------------------------------------------------------------- batches

def random_crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                     padding: int) -> torch.Tensor:
    """Random-crop-with-zero-padding and horizontal flip of a whole batch at once.

    Pads the batch by ``padding`` pixels on every side, then cuts out, for each sample b,
    the H x W window whose top-left corner is ``(top[b], left[b])`` in the padded image,
    mirrored left-right where ``flip[b]``. ``top = left = padding`` and no flip is the
    identity. All of it is one ``gather``: no Python loop over samples.

    Args:
        images: (B, C, H, W), any dtype.
        top, left: int64 (B,), values in ``[0, 2 * padding]``.
        flip: bool (B,).
        padding: pixels of zero padding.
    Returns:
        (B, C, H, W), same dtype and device as ``images``.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    wp = w + 2 * padding
    rows = top[:, None] + torch.arange(h, device=images.device)                     # (B, H)
    cols = torch.arange(w, device=images.device)
    cols = left[:, None] + torch.where(flip[:, None], cols.flip(0), cols)           # (B, W)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).reshape(b, c, h, w)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class BatchLoader:
    """Batches of normalised float images from an :class:`ImageSet`, augmented on the device.

    The uint8 images are moved to ``device`` once, here. Each epoch, with ``train=True``:
    a random permutation, then per batch a random crop with ``padding`` pixels of zero
    padding and a random horizontal flip (``random_crop_flip``), then conversion to
    float, scaling to [0, 1] and normalisation with the data set's mean/std. With
    ``train=False``: original order, no augmentation, the last partial batch kept.

    All randomness of epoch ``e`` comes from a CPU ``torch.Generator`` seeded from
    ``(seed, e)``, so epoch ``e`` is the same on every device and whether or not the run
    was restarted: save :meth:`state_dict` with the checkpoint and restore it with
    ``load_state_dict``. Each call to ``iter()`` runs the next epoch.

    Yields ``(x, y)``: x float32 (B, 3, H, W) on ``device`` (channels-last memory format
    if ``channels_last``), y int64 (B,) on ``device``.

    Several processes (``world`` > 1, training only): ``batch_size`` is the *global* batch;
    process ``rank`` gets images ``rank * B/world ... (rank + 1) * B/world - 1`` of every
    global batch, with the augmentation the one-process run gives those images, so the
    ranks see disjoint shards with the same number of steps.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, train: bool, device: str | torch.device = "cpu",
                 seed: int = 0, drop_last: bool | None = None, channels_last: bool = False,
                 padding: int | None = None, flip: bool = True, rank: int = 0, world: int = 1) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if world > 1 and (not train or batch_size % world):
            raise ValueError(f"with {world} processes the training batch ({batch_size}) must be a multiple of "
                             f"{world} (it is the global batch, split evenly between the processes).")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.seed = int(seed)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = channels_last
        info = _INFO.get(data.name, {})
        self.padding = int(padding if padding is not None else info.get("padding", data.image_size // 8))
        self.flip = flip
        self.mean = torch.tensor(data.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(data.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.epoch = 0
        self.rank, self.world = int(rank), int(world)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """``epoch`` is the epoch the next ``iter()`` produces."""
        return {"epoch": self.epoch, "seed": self.seed, "num_samples": len(self.labels)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("num_samples", len(self.labels)) != len(self.labels):
            raise ValueError(f"state is for {state['num_samples']} samples, this loader has {len(self.labels)}")
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``."""
        self.epoch = int(epoch)

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The randomness of one training epoch, on CPU: order (N,), top (N,), left (N,), flip (N,).

        Entry i of top/left/flip is used for the i-th sample of the epoch.
        """
        n = len(self.labels)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * self.padding + 1, (2, n), generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        if not self.flip:
            flip = torch.zeros_like(flip)
        return order, offsets[0], offsets[1], flip

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # a generator: the epoch counts only once its first batch is asked for, so that a
        # caller that calls iter() without iterating (tqdm.auto does, in its constructor)
        # does not skip an epoch
        epoch, self.epoch = self.epoch, self.epoch + 1
        yield from self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = len(self.labels), self.batch_size
        if self.train:
            order, top, left, flip = (t.to(self.device) for t in self.plan(epoch))
        share = bs // self.world
        for b in range(len(self)):
            s, e = b * bs, min((b + 1) * bs, n)
            if self.world > 1:  # this process's shard of the global batch
                s, e = s + self.rank * share, s + (self.rank + 1) * share
            if self.train:
                idx = order[s:e]
                x = random_crop_flip(self.images[idx], top[s:e], left[s:e], flip[s:e], self.padding)
                y = self.labels[idx]
            else:
                x, y = self.images[s:e], self.labels[s:e]
            x = x.float().sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
