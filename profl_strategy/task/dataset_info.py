"""Static facts about the datasets, and what names one client's train partition.

Kept apart from :mod:`profl_strategy.task.dataset` (the loading) and
:mod:`profl_strategy.task.partition_cache` (the disk cache), which both use
them; torch-free, so the server reads a dataset's shape cheaply.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType


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

# FEMNIST on the hub has only a train split; this fraction is held out as test.
FEMNIST_TEST_FRACTION = 0.1


def get_info(dataset: str) -> DatasetInfo:
    """Return the ``DatasetInfo`` of ``dataset`` or raise a helpful ValueError."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(
            f"Unknown dataset '{dataset}'; expected one of {sorted(DATASETS)}."
        ) from None


@dataclass(frozen=True)
class Partition:
    """One client's train partition: everything that decides which rows it gets.

    The arguments of :func:`~profl_strategy.task.dataset.load_partition`,
    :func:`~profl_strategy.task.dataset.partition_rows` and
    :func:`~profl_strategy.task.partition_cache.partition_cache_files`, spelled
    once: the dataset, partition id and count, then keywords only. ``alpha`` is
    used by ``"dirichlet"`` only and ``shards_per_partition`` by ``"shards"``
    only; ``data_dir=""`` reads the Hugging Face Hub. ``val_fraction`` is the seeded
    share of the train split the server holds out for validation
    (:func:`~profl_strategy.task.split_order.split_order`): those rows are removed before
    the split into partitions, and 0 leaves every partition as it was without it.
    """

    dataset: str
    partition_id: int
    num_partitions: int
    _: KW_ONLY
    partitioner: str
    alpha: float
    shards_per_partition: int
    seed: int
    data_dir: str
    val_fraction: float = 0.0

    def split_key(self) -> tuple[object, ...]:
        """Every field but the partition id: what decides the whole split, so one
        partitioner serves every partition of it."""
        return tuple(v for k, v in vars(self).items() if k != "partition_id")
