"""Federated image datasets for ProFL, deterministic for a seed.

Each client gets its train partition from a flwr-datasets partitioner (IID,
Dirichlet label skew or label shards). The data come either from the Hugging
Face Hub through ``FederatedDataset`` (``data_dir=""``) or, offline, from local
files under ``data_dir`` (see :mod:`profl_strategy.task.local_data`); in both
cases the same partitioners decide which rows each client gets.

A deployed SuperNode runs every message in a fresh ClientApp process, so each
partition is cached on disk the first time it is split
(:mod:`profl_strategy.task.partition_cache`): later messages read two ``.npy``
files with numpy instead of importing the data stack (datasets, flwr-datasets,
pyarrow, pandas, torchvision: seconds) and splitting again. Those libraries are
imported only where a partition or the test split needs them.
The datasets' static facts are in :mod:`profl_strategy.task.dataset_info`.

Before any partitioning, the server's validation split (``val-fraction`` of the train
split, :func:`split_order`) is taken out: the same rows in the server and in every node,
from the seed alone, so no node ever trains on a row the server validates on.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from profl_strategy.task.dataset_info import (
    FEMNIST_TEST_FRACTION,
    DatasetInfo,
    Partition,
    get_info,
)
from profl_strategy.task.images import (
    CROP_PADDING,
    ImageDataset,
    channels_last_batch,
    whole_batch,
)
from profl_strategy.task.local_data import LOCAL_DATASETS, load_local_labels, load_local_split
from profl_strategy.task.partition_cache import cache_files, read_partition, save_partition
from profl_strategy.task.split_order import split_order, validation_count

if TYPE_CHECKING:
    import datasets
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import Partitioner


PARTITIONER_KINDS: tuple[str, ...] = ("iid", "dirichlet", "shards")
# The validation split's name among the hub's splits once it is held out.
VAL_SPLIT = "profl-validation"
# Dirichlet re-samples until every client has this many samples; kept small so
# that small alphas with many clients still succeed within its 10 attempts.
DIRICHLET_MIN_PARTITION_SIZE = 10

_LOCAL_FULL: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
_LOCAL_PARTITIONERS: dict[tuple[Any, ...], Partitioner] = {}
_HUB_FDS: dict[tuple[Any, ...], FederatedDataset] = {}


def make_partitioner(p: Partition, label_column: str = "label") -> Partitioner:
    """Build a fresh flwr-datasets partitioner for ``p`` (a dataset can be assigned once).

    ``alpha`` is used by ``"dirichlet"`` only and ``shards_per_partition`` by
    ``"shards"`` only; ``"iid"`` relies on the dataset being shuffled by seed.
    """
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        ShardPartitioner,
    )

    kind, num_partitions, seed = p.partitioner, p.num_partitions, p.seed
    if kind == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=label_column,
            alpha=p.alpha,
            min_partition_size=DIRICHLET_MIN_PARTITION_SIZE,
            self_balancing=True,
            seed=seed,
        )
    if kind == "shards":
        return ShardPartitioner(
            num_partitions=num_partitions,
            partition_by=label_column,
            num_shards_per_partition=p.shards_per_partition,
            seed=seed,
        )
    raise ValueError(f"Unknown partitioner '{kind}'; expected one of {PARTITIONER_KINDS}.")


def partition_rows(dataset: str, partition_id: int, num_partitions: int, **spec: Any) -> np.ndarray:
    """Return the row indices (into the local train split) of one partition.

    Takes the arguments of :class:`~profl_strategy.task.dataset_info.Partition`;
    ``data_dir`` must be set.
    """
    return _partition_rows(Partition(dataset, partition_id, num_partitions, **spec))


def _partition_rows(p: Partition) -> np.ndarray:
    """Row indices of ``p`` in the local train split."""
    _check_partition_id(p.partition_id, p.num_partitions)
    # Via Arrow: iterating a datasets Column row by row is ~15x slower.
    rows = local_partitioner(p).load_partition(p.partition_id).with_format("arrow")[:]["row"]
    return rows.to_numpy().astype(np.int64, copy=False)


def local_partitioner(p: Partition) -> Partitioner:
    """The partitioner of ``p``'s local train split, built once per process.

    Only the labels go into its ``datasets.Dataset`` (fast), with a ``row`` column
    recording where each sample came from so the image array can be indexed. The
    nodes' partitions and the server's check of them
    (:mod:`~profl_strategy.task.partition_check`) share it: in one process
    (``server_app.inprocess``) the split is made once.
    """
    key = p.split_key()
    part = _LOCAL_PARTITIONERS.get(key)
    if part is None:
        import datasets

        _check_local(p.dataset)
        labels = load_local_labels(p.dataset, "train", p.data_dir)
        _, rows = split_order(len(labels), p.seed, p.val_fraction)
        part = make_partitioner(p)
        part.dataset = datasets.Dataset.from_dict({"label": labels[rows], "row": rows})
        part.load_partition(0)  # splits now: a split that failed is not kept to retry
        _LOCAL_PARTITIONERS[key] = part
    return part


def train_labels(
    dataset: str, *, data_dir: str, seed: int, val_fraction: float = 0.0
) -> tuple[np.ndarray, str]:
    """The train split's labels in the order the nodes' partitioner sees them, and the
    name of their column: what decides how the split is partitioned, without the images.

    Local data: the label file in :func:`split_order`, validation rows left out. Hub
    data: the column of the ``FederatedDataset`` the nodes' partitions come from (same
    seed, so the same shuffle, and the same validation rows held out).
    """
    info = get_info(dataset)
    if data_dir:
        _check_local(dataset)
        labels = load_local_labels(dataset, "train", data_dir)
        return labels[split_order(len(labels), seed, val_fraction)[1]], "label"
    fds = _hub_full(info, seed, val_fraction)
    split = fds.load_split("train").select_columns([info.label_column])
    return np.asarray(split.with_format("numpy")[info.label_column]), info.label_column


def load_validation(
    dataset: str, *, data_dir: str, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the server's validation split as ``(images, labels)``: the rows of the
    train split that :func:`split_order` holds out of every partition.

    Settings are chosen on these rows so that the test split is only reported. Empty
    arrays when ``val_fraction`` is 0. Local rows come in their file order.
    """
    info = get_info(dataset)
    if data_dir:
        _check_local(dataset)
        images, labels = _local_full(dataset, "train", data_dir)
        rows = np.sort(split_order(len(labels), seed, val_fraction)[0])
        return images[rows], labels[rows]
    if not validation_count(1, val_fraction):  # 0: none held out (and a bad value refused)
        c, h, w = info.input_shape
        return np.empty((0, h, w, c), dtype=np.uint8), np.empty(0, dtype=np.int64)
    return _hf_to_numpy(_hub_full(info, seed, val_fraction).load_split(VAL_SPLIT), info)


def load_partition(
    dataset: str, partition_id: int, num_partitions: int, **spec: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 NxHxWxC, labels int64 N)`` of one client's train data.

    Takes the arguments of :class:`~profl_strategy.task.dataset_info.Partition`:
    ``dataset``, ``partition_id``, ``num_partitions``, then the keywords
    ``partitioner``, ``alpha``, ``shards_per_partition``, ``seed``, ``data_dir`` and
    ``val_fraction`` (default 0: no rows held out for validation).
    Reads local files when ``data_dir`` is set, else the Hugging Face Hub. The
    first call for a partition splits the data with flwr-datasets and caches
    the result (:mod:`profl_strategy.task.partition_cache`); later calls, such
    as a deployed node's next train message in a fresh process, read it back
    with numpy only.
    """
    part = Partition(dataset, partition_id, num_partitions, **spec)
    c, h, w = get_info(dataset).input_shape
    _check_partition_id(partition_id, num_partitions)
    if part.data_dir:
        _check_local(dataset)
    files = cache_files(part)
    cached = read_partition(files, (h, w, c))
    if cached is not None:
        return cached
    images, labels = _split_partition(part)
    save_partition(files, images, labels)
    return images, labels


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
    return _hf_to_numpy(_hub_full(info, seed).load_split("test"), info)


def make_loader(
    images: np.ndarray,
    labels: np.ndarray,
    dataset: str,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    channels_last: bool = False,
) -> DataLoader:
    """Wrap uint8 NHWC arrays in a DataLoader of normalised float NCHW tensors.

    CIFAR training data get torchvision's RandomCrop(32, padding=4) and
    horizontal flips, drawn per image from torch's global RNG and applied a batch
    at a time (:mod:`profl_strategy.task.images`); shuffling uses a generator
    seeded with ``seed`` so that the batch order is reproducible.

    With ``channels_last`` each image batch is laid out channels-last in memory
    (same shape and values): oneDNN then runs every convolution of the model in
    that layout, up to a fifth faster on CPU for the small CNNs (README), with
    results that differ from the default layout in floating-point rounding only.
    """
    info = get_info(dataset)
    c, h, w = info.input_shape
    if images.ndim != 4 or images.shape[1:] != (h, w, c) or len(images) != len(labels):
        raise ValueError(
            f"Expected {dataset} images of shape (N, {h}, {w}, {c}) and N labels, "
            f"got images {images.shape} and labels {labels.shape}."
        )
    crop_padding = CROP_PADDING.get(dataset) if train else None
    data = ImageDataset(images, labels, info.mean, info.std, crop_padding)
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=train,
        generator=generator,
        num_workers=0,
        collate_fn=channels_last_batch if channels_last else whole_batch,  # type: ignore[arg-type]
    )


def clear_caches() -> None:
    """Drop cached arrays, partitioners and FederatedDatasets (frees memory).

    Only this process's memory: the partitions cached on disk stay.
    """
    _LOCAL_FULL.clear()
    _LOCAL_PARTITIONERS.clear()
    _HUB_FDS.clear()


def _check_partition_id(partition_id: int, num_partitions: int) -> None:
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition_id {partition_id} is out of range for "
            f"num_partitions={num_partitions}; expected 0..{num_partitions - 1}."
        )


def _split_partition(p: Partition) -> tuple[np.ndarray, np.ndarray]:
    """Split the train data with flwr-datasets and return one partition's arrays."""
    if p.data_dir:
        rows = _partition_rows(p)
        images, labels = _local_full(p.dataset, "train", p.data_dir)
        return images[rows], labels[rows]
    info = get_info(p.dataset)
    key = p.split_key()
    fds = _HUB_FDS.get(key)
    if fds is None:
        part = make_partitioner(p, label_column=info.label_column)
        fds = _HUB_FDS[key] = _hub_dataset(info, part, p.seed, p.val_fraction)
    return _hf_to_numpy(fds.load_partition(p.partition_id, "train"), info)


def _check_local(dataset: str) -> None:
    """Refuse, with the way out, a dataset that has no offline reader."""
    if dataset not in LOCAL_DATASETS:
        raise ValueError(
            f"Dataset '{dataset}' is not available offline; with data-dir set only "
            f"{LOCAL_DATASETS} can be read. Pick one of those, or set data-dir='' "
            f"to download '{get_info(dataset).hub_id}' from the Hugging Face Hub."
        )


def _local_full(dataset: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """Load (once per process) a full local split; Ray actors reuse it."""
    _check_local(dataset)
    key = (dataset, split, data_dir)
    if key not in _LOCAL_FULL:
        _LOCAL_FULL[key] = load_local_split(dataset, split, data_dir)
    return _LOCAL_FULL[key]


def _hub_full(info: DatasetInfo, seed: int, val_fraction: float = 0.0) -> FederatedDataset:
    """The hub dataset with every split whole (train as one partition), once per seed and
    validation share."""
    key = (info.name, "whole", seed, val_fraction)
    fds = _HUB_FDS.get(key)
    if fds is None:
        from flwr_datasets.partitioner import IidPartitioner

        whole = IidPartitioner(num_partitions=1)
        fds = _HUB_FDS[key] = _hub_dataset(info, whole, seed, val_fraction)
    return fds


def _hub_splits(
    splits: datasets.DatasetDict, *, femnist: bool, val_fraction: float
) -> datasets.DatasetDict:
    """The hub's splits as a run uses them, after ``FederatedDataset``'s seeded shuffle.

    FEMNIST's test split is cut from its only split first; then the validation split
    (:data:`VAL_SPLIT`) is the first :func:`validation_count` rows of the shuffled train
    split, the rule :func:`split_order` applies to local data, and the partitioner gets
    the rest.
    """
    import datasets
    from flwr_datasets.preprocessor import Divider

    if femnist:
        divide = {"train": 1.0 - FEMNIST_TEST_FRACTION, "test": FEMNIST_TEST_FRACTION}
        splits = Divider(divide_config=divide, divide_split="train")(splits)
    train = splits["train"]
    held = validation_count(len(train), val_fraction)
    if held == 0:
        return splits
    rest = train.select(range(held, len(train)))
    return datasets.DatasetDict({**splits, "train": rest, VAL_SPLIT: train.select(range(held))})


def _hub_dataset(
    info: DatasetInfo, partitioner: Partitioner, seed: int, val_fraction: float = 0.0
) -> FederatedDataset:
    """Create a FederatedDataset and download it now, so failures are explicit."""
    from flwr_datasets import FederatedDataset

    femnist = info.name == "femnist"
    preprocessor = None
    if femnist or val_fraction > 0:
        preprocessor = partial(_hub_splits, femnist=femnist, val_fraction=val_fraction)
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
