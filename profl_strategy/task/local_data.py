"""Readers for the offline copies of MNIST, Fashion-MNIST and CIFAR-10.

The machines that run ProFL may have no access to the Hugging Face Hub, so the
datasets in ``data-dir`` are read here straight from their files:

- MNIST / Fashion-MNIST in torchvision's IDX layout (``<root>/MNIST/raw``,
  ``<root>/FashionMNIST/raw``);
- CIFAR-10 as the JPEG zip ``<root>/cifar10-jpeg/CIFAR-10-images-jpeg.zip`` plus
  ``train_index.csv`` / ``test_index.csv`` (``orig_index,label,path``) that give the
  original CIFAR-10 order and labels.

Decoding 60k JPEGs takes seconds, so the decoded arrays are cached as ``.npy``
files (``~/.cache/profl`` or ``$PROFL_CACHE_DIR``). PIL and torchvision are
imported by the readers that need them: a deployed ClientApp reading a cached
partition (see ``profl_strategy.task.dataset``) needs neither.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

LOCAL_DATASETS: tuple[str, ...] = ("mnist", "fmnist", "cifar10")
CACHE_DIR_ENV = "PROFL_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/profl")

CIFAR10_FOLDER = "cifar10-jpeg"
CIFAR10_ZIP = "CIFAR-10-images-jpeg.zip"
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_IDX_FOLDERS: dict[str, str] = {"mnist": "MNIST", "fmnist": "FashionMNIST"}
_IDX_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}
_SPLITS: tuple[str, ...] = ("train", "test")


def cache_dir() -> Path:
    """Return the folder for decoded-array caches (``$PROFL_CACHE_DIR`` wins)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def load_local_split(dataset: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of a dataset stored under ``data_dir``.

    Parameters
    ----------
    dataset : str
        One of ``LOCAL_DATASETS``.
    split : str
        ``"train"`` or ``"test"``.
    data_dir : str
        Folder holding ``MNIST/raw``, ``FashionMNIST/raw`` and/or ``cifar10-jpeg``.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        Images as uint8 ``N x H x W x C`` and labels as int64 ``N``, in the
        dataset's original order (so that partitions are reproducible).
    """
    files = split_files(dataset, split, data_dir)  # checks the split and the dataset
    if dataset == "cifar10":
        return _load_cifar10_jpeg(split, files)
    return _load_idx(dataset, split, Path(data_dir).expanduser(), files)


def load_local_labels(dataset: str, split: str, data_dir: str) -> np.ndarray:
    """The labels of one local split (int64, original order), without its images.

    What :func:`load_local_split` returns as labels, read from the label file
    (CIFAR-10: the index) alone: the server checks how the train split can be
    partitioned (:mod:`profl_strategy.task.partition_check`) without its images.
    """
    files = split_files(dataset, split, data_dir)
    if not files[1].is_file():
        raise FileNotFoundError(
            f"Missing {dataset} file '{files[1]}'. Set data-dir to the folder holding "
            f"the {dataset} files (e.g. /work/shared/data)."
        )
    if dataset == "cifar10":
        return read_cifar10_index(files[1])[1]
    raw = files[1].read_bytes()
    count = int.from_bytes(raw[4:8], "big")
    # IDX label files: magic 2049 (unsigned bytes, one dimension), the count, the labels
    if int.from_bytes(raw[:4], "big") != 2049 or len(raw) != 8 + count:
        raise ValueError(f"'{files[1]}' is not an IDX label file (magic 2049, then the count).")
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def split_files(dataset: str, split: str, data_dir: str) -> tuple[Path, ...]:
    """The files one local split is read from, whether they exist or not.

    The readers check these and the caches key on their size and mtime, so a
    replaced file is read again instead of served from a stale cache.
    """
    if split not in _SPLITS:
        raise ValueError(f"Unknown split '{split}'; expected one of {_SPLITS}.")
    root = Path(data_dir).expanduser()
    if dataset in _IDX_FOLDERS:
        raw = root / _IDX_FOLDERS[dataset] / "raw"
        prefix = _IDX_PREFIX[split]
        return (raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte")
    if dataset == "cifar10":
        folder = root / CIFAR10_FOLDER
        return (folder / CIFAR10_ZIP, folder / f"{split}_index.csv")
    raise ValueError(
        f"Dataset '{dataset}' has no local reader; only {LOCAL_DATASETS} exist offline."
    )


def _load_idx(
    dataset: str, split: str, root: Path, files: tuple[Path, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST/Fashion-MNIST with torchvision, never downloading."""
    from torchvision.datasets import MNIST, FashionMNIST

    for path in files:
        if not path.is_file():
            raise FileNotFoundError(
                f"Missing {dataset} file '{path}'. Set data-dir to the folder "
                f"that contains '{_IDX_FOLDERS[dataset]}/raw/' with the uncompressed "
                "IDX files (e.g. /work/shared/data)."
            )
    cls = MNIST if dataset == "mnist" else FashionMNIST
    tv = cls(root=str(root), train=split == "train", download=False)
    images = tv.data.numpy().astype(np.uint8, copy=False)[..., None]
    labels = tv.targets.numpy().astype(np.int64, copy=False)
    return images, labels


def _load_cifar10_jpeg(split: str, files: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 from the JPEG zip, decoding once and caching as ``.npy``."""
    zip_path, csv_path = files
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(
                f"Missing CIFAR-10 file '{path}'. Set data-dir to the folder that "
                f"contains '{CIFAR10_FOLDER}/{CIFAR10_ZIP}' and "
                f"'{CIFAR10_FOLDER}/{{train,test}}_index.csv' (e.g. /work/shared/data)."
            )
    paths, labels = read_cifar10_index(csv_path)

    # Key on the zip's size and mtime so a replaced archive is decoded again.
    stat = zip_path.stat()
    key = f"cifar10-jpeg-{split}-{stat.st_size}-{stat.st_mtime_ns}"
    images_file = cache_dir() / f"{key}-images.npy"
    images = read_cache(images_file, np.uint8, (len(paths), 32, 32, 3))
    if images is None:
        images = _decode_jpegs(zip_path, paths)
        save_cache(images_file, images)
    return images, labels


def read_cifar10_index(csv_path: Path) -> tuple[list[str], np.ndarray]:
    """Read ``orig_index,label,path`` rows, sorted into the original order."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda row: int(row["orig_index"]))
    paths = [row["path"] for row in rows]
    labels = np.asarray([int(row["label"]) for row in rows], dtype=np.int64)
    return paths, labels


def _decode_jpegs(zip_path: Path, paths: list[str]) -> np.ndarray:
    """Decode the given zip members into one uint8 ``N x 32 x 32 x 3`` array."""
    from PIL import Image

    images = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    with zipfile.ZipFile(zip_path) as archive:
        for i, member in enumerate(paths):
            with Image.open(io.BytesIO(archive.read(member))) as img:
                images[i] = np.asarray(img.convert("RGB"))
    return images


def read_cache(
    path: Path, dtype: type[np.generic], shape: tuple[int | None, ...]
) -> np.ndarray | None:
    """Return the cached array, or None if absent or not what we expect.

    ``None`` in ``shape`` accepts any length along that axis.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != len(shape):
        return None
    if any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True)):
        return None
    return array


def save_cache(path: Path, array: np.ndarray) -> None:
    """Cache ``array`` at ``path``; warn instead of failing if that is impossible.

    A read-only cache must not stop training: it only costs recomputing.
    """
    try:
        _save_atomic(path, array)
    except OSError as err:
        warnings.warn(
            f"Could not cache '{path.name}' in '{path.parent}' ({err}); set "
            f"{CACHE_DIR_ENV} to a writable folder to avoid recomputing it.",
            stacklevel=2,
        )


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` so that concurrent readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
