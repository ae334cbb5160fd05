"""The per-node disk cache of train partitions.

A deployed SuperNode runs every message in a fresh ClientApp process, so each
partition is cached on disk the first time it is split (see
:func:`partition_cache_files`): later messages read two ``.npy`` files with
numpy instead of importing the data stack (datasets, flwr-datasets, pyarrow,
pandas, torchvision: seconds) and splitting again. The cache lives in
``$PROFL_CACHE_DIR/partitions`` (default ``~/.cache/profl``); nothing here
imports the data stack.

Every new seed, partitioner or node count adds files and nothing in a run deletes
them, so a long-lived device prunes the ones it no longer uses::

    python -m profl_strategy.task.partition_cache              # size of the cache
    python -m profl_strategy.task.partition_cache --prune 30   # not used for 30 days
    python -m profl_strategy.task.partition_cache --prune 0    # all of it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from profl_strategy.task.dataset_info import FEMNIST_TEST_FRACTION, Partition, get_info
from profl_strategy.task.local_data import cache_dir, read_cache, save_cache, split_files

# Bump when what a cached partition holds, or how it is computed here, changes.
PARTITION_CACHE_VERSION = 1
# Libraries whose versions can change which rows a partition gets (shuffles, partitioners).
PARTITION_LIBRARIES: tuple[str, ...] = ("flwr-datasets", "datasets", "numpy")

CacheFiles = tuple[Path, Path]  # (images, labels)
CACHE_SUFFIXES: tuple[str, ...] = ("-images.npy", "-labels.npy")


def partitions_dir() -> Path:
    """The folder of the cached partitions (under ``$PROFL_CACHE_DIR``)."""
    return cache_dir() / "partitions"


def partition_cache_files(
    dataset: str, partition_id: int, num_partitions: int, **spec: Any
) -> CacheFiles:
    """The ``(images, labels)`` ``.npy`` files that cache one partition.

    Takes the arguments of :class:`~profl_strategy.task.dataset_info.Partition`
    (those of ``load_partition``); see :func:`cache_files`.
    """
    return cache_files(Partition(dataset, partition_id, num_partitions, **spec))


def cache_files(part: Partition) -> CacheFiles:
    """The ``(images, labels)`` ``.npy`` files that cache ``part``.

    Their name hashes everything that decides the partition: the data (the
    resolved ``data_dir`` and its train files' size and mtime, or the hub id),
    the partitioner and its parameters, the seed, the partition, the share held
    out for validation, the versions of ``PARTITION_LIBRARIES`` and
    ``PARTITION_CACHE_VERSION``. Changing any of them misses the cache instead of
    serving a stale partition. A partition without a validation split keeps the name
    it had before there was one (its rows are the same), so existing caches still serve.
    """
    dataset = part.dataset
    if part.data_dir:
        files = split_files(dataset, "train", part.data_dir)
        source: dict[str, Any] = {
            "data-dir": str(Path(part.data_dir).expanduser().resolve()),
            "files": [_file_stamp(path) for path in files],
        }
    else:
        source = {"hub": get_info(dataset).hub_id, "test-fraction": FEMNIST_TEST_FRACTION}
    key = {
        "cache-version": PARTITION_CACHE_VERSION,
        "libraries": {name: version(name) for name in PARTITION_LIBRARIES},
        "dataset": dataset,
        "source": source,
        "partitioner": part.partitioner,
        "alpha": float(part.alpha),
        "shards": int(part.shards_per_partition),
        "seed": int(part.seed),
        "num-partitions": int(part.num_partitions),
        "partition-id": int(part.partition_id),
    }
    if part.val_fraction:  # rows held out for validation change every partition
        key["val-fraction"] = float(part.val_fraction)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = f"{dataset}-{part.partitioner}-{part.partition_id}of{part.num_partitions}-{digest}"
    folder = partitions_dir()
    return folder / f"{stem}-images.npy", folder / f"{stem}-labels.npy"


def read_partition(
    files: CacheFiles, image_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(images, labels)``, or None if missing, unreadable or misshapen.

    ``image_shape`` is one image's ``(H, W, C)``.
    """
    images_file, labels_file = files
    labels = read_cache(labels_file, np.int64, (None,))
    if labels is None:
        return None
    images = read_cache(images_file, np.uint8, (len(labels), *image_shape))
    if images is None:
        return None
    for path in files:  # the modification time records the last use (prune_partitions)
        try:
            os.utime(path)
        except OSError:  # a read-only cache still serves
            pass
    return images, labels


def save_partition(files: CacheFiles, images: np.ndarray, labels: np.ndarray) -> None:
    """Cache a partition's arrays (warns instead of failing, see ``save_cache``)."""
    images_file, labels_file = files
    save_cache(images_file, images)
    save_cache(labels_file, labels)


def cached_partitions(folder: Path | None = None) -> list[Path]:
    """The cache's partition files (not the temporary files of a write in progress)."""
    folder = folder or partitions_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(CACHE_SUFFIXES))


def prune_partitions(
    older_than_days: float, folder: Path | None = None, now: float | None = None
) -> tuple[int, int]:
    """Delete cached partitions not used for ``older_than_days`` days (0: every one).

    A pruned partition that is needed again is split again by its next message, so
    pruning costs at most one split. Returns ``(files deleted, bytes freed)``.
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    files = freed = 0
    for path in cached_partitions(folder):
        try:
            stat = path.stat()
            if stat.st_mtime <= cutoff:
                path.unlink()
                files, freed = files + 1, freed + stat.st_size
        except FileNotFoundError:  # another process pruned it first
            continue
    return files, freed


def _file_stamp(path: Path) -> tuple[str, int, int]:
    """``(name, size, mtime_ns)`` of a data file, ``-1`` for both if it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return path.name, -1, -1
    return path.name, stat.st_size, stat.st_mtime_ns


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Size or prune the partition cache.")
    parser.add_argument(
        "--prune", type=float, metavar="DAYS", help="delete partitions not used for DAYS days"
    )
    args = parser.parse_args(argv)
    folder = partitions_dir()
    if args.prune is not None:
        if args.prune < 0:
            parser.error(f"--prune takes days >= 0, got {args.prune}")
        files, freed = prune_partitions(args.prune, folder)
        print(f"deleted {files} files ({freed / 2**20:.1f} MB) from {folder}")
    paths = cached_partitions(folder)
    size = sum(p.stat().st_size for p in paths)
    print(f"{folder}: {len(paths) // 2} partitions, {size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
