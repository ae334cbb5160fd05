"""Federated image datasets for ProFL, deterministic for a seed.

Each client gets its train partition from a flwr-datasets partitioner (IID,
Dirichlet label skew or label shards). The data come either from the Hugging
Face Hub through ``FederatedDataset`` (``data_dir=""``) or, offline, from local
files under ``data_dir`` (see ``client_app.local_data``); in both cases the same
partitioners decide which rows each client gets.

A deployed SuperNode runs every message in a fresh ClientApp process, so each
partition is cached on disk the first time it is split (see
:func:`partition_cache_files`): later messages read two ``.npy`` files with
numpy instead of importing the data stack (datasets, flwr-datasets, pyarrow,
pandas, torchvision: seconds) and splitting again. Those libraries are
imported only where a partition, the test split or CIFAR augmentation needs them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from client_app.local_data import (
    LOCAL_DATASETS,
    cache_dir,
    load_local_split,
    read_cache,
    save_cache,
    split_files,
)

if TYPE_CHECKING:
    import datasets
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import Partitioner


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shape, normalisation and hub columns."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hub_id: str
    image_column: str
    label_column: str


DATASETS: MappingProxyType[str, DatasetInfo] = MappingProxyType(
    {
        "mnist": DatasetInfo(
            "mnist",
            10,
            (1, 28, 28),
            (0.1307,),
            (0.3081,),
            "ylecun/mnist",
            "image",
            "label",
        ),
        "fmnist": DatasetInfo(
            "fmnist",
            10,
            (1, 28, 28),
            (0.2860,),
            (0.3530,),
            "zalando-datasets/fashion_mnist",
            "image",
            "label",
        ),
        "cifar10": DatasetInfo(
            "cifar10",
            10,
            (3, 32, 32),
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            "uoft-cs/cifar10",
            "img",
            "label",
        ),
        "cifar100": DatasetInfo(
            "cifar100",
            100,
            (3, 32, 32),
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            "uoft-cs/cifar100",
            "img",
            "fine_label",
        ),
        # No verified pixel statistics for the hub copy: map [0, 1] to [-1, 1].
        "femnist": DatasetInfo(
            "femnist",
            62,
            (1, 28, 28),
            (0.5,),
            (0.5,),
            "flwrlabs/femnist",
            "image",
            "character",
        ),
    }
)

PARTITIONER_KINDS: tuple[str, ...] = ("iid", "dirichlet", "shards")
# Dirichlet re-samples until every client has this many samples; kept small so
# that small alphas with many clients still succeed within its 10 attempts.
DIRICHLET_MIN_PARTITION_SIZE = 10
# FEMNIST on the hub has only a train split; this fraction is held out as test.
FEMNIST_TEST_FRACTION = 0.1
# Bump when what a cached partition holds, or how it is computed here, changes.
PARTITION_CACHE_VERSION = 1
# Libraries whose versions can change which rows a partition gets (shuffles, partitioners).
PARTITION_LIBRARIES: tuple[str, ...] = ("flwr-datasets", "datasets", "numpy")

_LOCAL_FULL: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
_LOCAL_PARTITIONERS: dict[tuple[Any, ...], Partitioner] = {}
_HUB_FDS: dict[tuple[Any, ...], FederatedDataset] = {}


def get_info(dataset: str) -> DatasetInfo:
    """Return the ``DatasetInfo`` of ``dataset`` or raise a helpful ValueError."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(
            f"Unknown dataset '{dataset}'; expected one of {sorted(DATASETS)}."
        ) from None


def make_partitioner(
    kind: str,
    num_partitions: int,
    *,
    alpha: float,
    shards_per_partition: int,
    seed: int,
    label_column: str = "label",
) -> Partitioner:
    """Build a fresh flwr-datasets partitioner (a dataset can be assigned once).

    ``alpha`` is used by ``"dirichlet"`` only and ``shards_per_partition`` by
    ``"shards"`` only; ``"iid"`` relies on the dataset being shuffled by seed.
    """
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        ShardPartitioner,
    )

    if kind == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=label_column,
            alpha=alpha,
            min_partition_size=DIRICHLET_MIN_PARTITION_SIZE,
            self_balancing=True,
            seed=seed,
        )
    if kind == "shards":
        return ShardPartitioner(
            num_partitions=num_partitions,
            partition_by=label_column,
            num_shards_per_partition=shards_per_partition,
            seed=seed,
        )
    raise ValueError(f"Unknown partitioner '{kind}'; expected one of {PARTITIONER_KINDS}.")


def partition_rows(
    dataset: str,
    partition_id: int,
    num_partitions: int,
    *,
    partitioner: str,
    alpha: float,
    shards_per_partition: int,
    seed: int,
    data_dir: str,
) -> np.ndarray:
    """Return the row indices (into the local train split) of one partition.

    Only the labels go into a ``datasets.Dataset`` (fast); a ``row`` column
    records where each sample came from so the image array can be indexed.
    """
    import datasets

    _check_partition_id(partition_id, num_partitions)
    key = (dataset, data_dir, partitioner, num_partitions, alpha, shards_per_partition, seed)
    part = _LOCAL_PARTITIONERS.get(key)
    if part is None:
        part = make_partitioner(
            partitioner,
            num_partitions,
            alpha=alpha,
            shards_per_partition=shards_per_partition,
            seed=seed,
        )
        _, labels = _local_full(dataset, "train", data_dir)
        # Shuffle by seed first, as FederatedDataset does, so IID is random too.
        order = np.random.default_rng(seed).permutation(len(labels))
        part.dataset = datasets.Dataset.from_dict({"label": labels[order], "row": order})
        _LOCAL_PARTITIONERS[key] = part
    # Via Arrow: iterating a datasets Column row by row is ~15x slower.
    rows = part.load_partition(partition_id).with_format("arrow")[:]["row"]
    return rows.to_numpy().astype(np.int64, copy=False)


def load_partition(
    dataset: str,
    partition_id: int,
    num_partitions: int,
    *,
    partitioner: str,
    alpha: float,
    shards_per_partition: int,
    seed: int,
    data_dir: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 NxHxWxC, labels int64 N)`` of one client's train data.

    Reads local files when ``data_dir`` is set, else the Hugging Face Hub. The
    first call for a partition splits the data with flwr-datasets and caches
    the result (:func:`partition_cache_files`); later calls, such as a deployed
    node's next train message in a fresh process, read it back with numpy only.
    """
    c, h, w = get_info(dataset).input_shape
    _check_partition_id(partition_id, num_partitions)
    if data_dir:
        _check_local(dataset)
    spec = {
        "partitioner": partitioner,
        "alpha": alpha,
        "shards_per_partition": shards_per_partition,
        "seed": seed,
        "data_dir": data_dir,
    }
    images_file, labels_file = partition_cache_files(dataset, partition_id, num_partitions, **spec)
    labels = read_cache(labels_file, np.int64, (None,))
    if labels is not None:
        images = read_cache(images_file, np.uint8, (len(labels), h, w, c))
        if images is not None:
            return images, labels
    images, labels = _split_partition(dataset, partition_id, num_partitions, **spec)
    save_cache(images_file, images)
    save_cache(labels_file, labels)
    return images, labels


def partition_cache_files(
    dataset: str,
    partition_id: int,
    num_partitions: int,
    *,
    partitioner: str,
    alpha: float,
    shards_per_partition: int,
    seed: int,
    data_dir: str,
) -> tuple[Path, Path]:
    """The ``(images, labels)`` ``.npy`` files that cache one partition.

    Their name hashes everything that decides the partition: the data (the
    resolved ``data_dir`` and its train files' size and mtime, or the hub id),
    the partitioner and its parameters, the seed, the partition, the versions
    of ``PARTITION_LIBRARIES`` and ``PARTITION_CACHE_VERSION``. Changing any of
    them misses the cache instead of serving a stale partition.
    """
    if data_dir:
        files = split_files(dataset, "train", data_dir)
        source: dict[str, Any] = {
            "data-dir": str(Path(data_dir).expanduser().resolve()),
            "files": [_file_stamp(path) for path in files],
        }
    else:
        source = {"hub": get_info(dataset).hub_id, "test-fraction": FEMNIST_TEST_FRACTION}
    key = {
        "cache-version": PARTITION_CACHE_VERSION,
        "libraries": {name: version(name) for name in PARTITION_LIBRARIES},
        "dataset": dataset,
        "source": source,
        "partitioner": partitioner,
        "alpha": float(alpha),
        "shards": int(shards_per_partition),
        "seed": int(seed),
        "num-partitions": int(num_partitions),
        "partition-id": int(partition_id),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = f"{dataset}-{partitioner}-{partition_id}of{num_partitions}-{digest}"
    folder = cache_dir() / "partitions"
    return folder / f"{stem}-images.npy", folder / f"{stem}-labels.npy"


def subsample_rows(n: int, share: float, *, seed: int, partition_id: int) -> np.ndarray:
    """Sorted positions of a seeded ``share`` of a partition's ``n`` rows (at least one).

    Smaller local datasets make a CPU-sized comparison affordable without
    changing the partitions (every node keeps its label skew). The draw
    depends on ``(seed, partition_id)`` only, so a node trains on the same
    rows in every round and in every method.
    """
    if not 0 < share <= 1:
        raise ValueError(f"data.subsample must lie in (0, 1], got {share}")
    if share == 1 or n == 0:
        return np.arange(n)
    keep = max(1, round(share * n))
    rng = np.random.default_rng((seed, partition_id))
    return np.sort(rng.permutation(n)[:keep])


def load_test(dataset: str, *, data_dir: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the held-out test split as ``(images, labels)``.

    ``seed`` only matters for the hub's FEMNIST, whose test split is carved out
    of its train split after a seeded shuffle (so it never overlaps partitions
    loaded with the same seed).
    """
    info = get_info(dataset)
    if data_dir:
        return _local_full(dataset, "test", data_dir)
    key = (dataset, "test", seed)
    fds = _HUB_FDS.get(key)
    if fds is None:
        from flwr_datasets.partitioner import IidPartitioner

        fds = _HUB_FDS[key] = _hub_dataset(info, IidPartitioner(num_partitions=1), seed)
    return _hf_to_numpy(fds.load_split("test"), info)


def make_loader(
    images: np.ndarray,
    labels: np.ndarray,
    dataset: str,
    *,
    batch_size: int,
    train: bool,
    seed: int,
) -> DataLoader:
    """Wrap uint8 NHWC arrays in a DataLoader of normalised float NCHW tensors.

    CIFAR training data get per-sample RandomCrop(32, padding=4) and horizontal
    flips (drawn from torch's global RNG); shuffling uses a generator seeded
    with ``seed`` so that the batch order is reproducible.
    """
    info = get_info(dataset)
    c, h, w = info.input_shape
    if images.ndim != 4 or images.shape[1:] != (h, w, c) or len(images) != len(labels):
        raise ValueError(
            f"Expected {dataset} images of shape (N, {h}, {w}, {c}) and N labels, "
            f"got images {images.shape} and labels {labels.shape}."
        )
    augment = None
    if train and dataset in ("cifar10", "cifar100"):
        from torchvision.transforms import v2

        augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    data = _ImageDataset(images, labels, info, augment)
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(
        data, batch_size=batch_size, shuffle=train, generator=generator, num_workers=0
    )


def clear_caches() -> None:
    """Drop cached arrays, partitioners and FederatedDatasets (frees memory).

    Only this process's memory: the partitions cached on disk stay.
    """
    _LOCAL_FULL.clear()
    _LOCAL_PARTITIONERS.clear()
    _HUB_FDS.clear()


class _ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Keep images as uint8 (4x less memory) and normalise per sample."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        info: DatasetInfo,
        augment: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mean = torch.tensor(info.mean).view(-1, 1, 1)
        self.std = torch.tensor(info.std).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        image = (image.float().div(255.0) - self.mean) / self.std
        return image, self.labels[index]


def _check_partition_id(partition_id: int, num_partitions: int) -> None:
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition_id {partition_id} is out of range for "
            f"num_partitions={num_partitions}; expected 0..{num_partitions - 1}."
        )


def _split_partition(
    dataset: str,
    partition_id: int,
    num_partitions: int,
    *,
    partitioner: str,
    alpha: float,
    shards_per_partition: int,
    seed: int,
    data_dir: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Split the train data with flwr-datasets and return one partition's arrays."""
    if data_dir:
        rows = partition_rows(
            dataset,
            partition_id,
            num_partitions,
            partitioner=partitioner,
            alpha=alpha,
            shards_per_partition=shards_per_partition,
            seed=seed,
            data_dir=data_dir,
        )
        images, labels = _local_full(dataset, "train", data_dir)
        return images[rows], labels[rows]
    info = get_info(dataset)
    key = (dataset, partitioner, num_partitions, alpha, shards_per_partition, seed)
    fds = _HUB_FDS.get(key)
    if fds is None:
        part = make_partitioner(
            partitioner,
            num_partitions,
            alpha=alpha,
            shards_per_partition=shards_per_partition,
            seed=seed,
            label_column=info.label_column,
        )
        fds = _HUB_FDS[key] = _hub_dataset(info, part, seed)
    return _hf_to_numpy(fds.load_partition(partition_id, "train"), info)


def _check_local(dataset: str) -> None:
    """Refuse, with the way out, a dataset that has no offline reader."""
    if dataset not in LOCAL_DATASETS:
        raise ValueError(
            f"Dataset '{dataset}' is not available offline; with data-dir set only "
            f"{LOCAL_DATASETS} can be read. Pick one of those, or set data-dir='' "
            f"to download '{get_info(dataset).hub_id}' from the Hugging Face Hub."
        )


def _file_stamp(path: Path) -> tuple[str, int, int]:
    """``(name, size, mtime_ns)`` of a data file, ``-1`` for both if it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return path.name, -1, -1
    return path.name, stat.st_size, stat.st_mtime_ns


def _local_full(dataset: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Load (once per process) a full local split; Ray actors reuse it."""
    _check_local(dataset)
    key = (dataset, split, data_dir)
    if key not in _LOCAL_FULL:
        _LOCAL_FULL[key] = load_local_split(dataset, split, data_dir)
    return _LOCAL_FULL[key]


def _hub_dataset(info: DatasetInfo, partitioner: Partitioner, seed: int) -> FederatedDataset:
    """Create a FederatedDataset and download it now, so failures are explicit."""
    from flwr_datasets import FederatedDataset
    from flwr_datasets.preprocessor import Divider

    preprocessor = None
    if info.name == "femnist":
        preprocessor = Divider(
            divide_config={
                "train": 1.0 - FEMNIST_TEST_FRACTION,
                "test": FEMNIST_TEST_FRACTION,
            },
            divide_split="train",
        )
    fds = FederatedDataset(
        dataset=info.hub_id,
        preprocessor=preprocessor,
        partitioners={"train": partitioner},
        seed=seed,
    )
    try:
        fds.load_split("train")  # Triggers the download (or the failure).
    except Exception as err:  # Any hub failure gets the same advice.
        raise RuntimeError(
            f"Could not reach the Hugging Face Hub to load '{info.hub_id}' "
            f"({type(err).__name__}: {err}). To use local data instead run e.g. "
            "flwr run . --run-config \"data-dir='/path/to/shared/data'\" with the "
            "folder holding MNIST/raw, FashionMNIST/raw and cifar10-jpeg/. Offline "
            f"supported datasets: {', '.join(LOCAL_DATASETS)}."
        ) from err
    return fds


def _hf_to_numpy(split: datasets.Dataset, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    """Convert a hub split with PIL images to uint8 NHWC and int64 arrays."""
    c, h, w = info.input_shape
    labels = np.asarray(split[info.label_column], dtype=np.int64)
    if len(labels) == 0:
        return np.empty((0, h, w, c), dtype=np.uint8), labels
    mode = "L" if c == 1 else "RGB"
    images = np.stack([np.asarray(img.convert(mode)) for img in split[info.image_column]])
    images = images.reshape(len(images), *images.shape[1:3], c)
    if images.shape[1:3] != (h, w):
        raise ValueError(
            f"Hub images of '{info.hub_id}' are {images.shape[1:3]}, expected {(h, w)}."
        )
    return images.astype(np.uint8, copy=False), labels
