"""Stop a run before round 1 when its train split cannot be cut into one partition per node.

The nodes split the data with flwr-datasets when they first train (``dataset``). A
split the library cannot make fails the same way on every node and in every round:
flwr-datasets' Dirichlet partitioner, for one, gives up with "The max number of
attempts (10) was reached" when label skew leaves some node fewer than
:data:`~profl_strategy.task.dataset.DIRICHLET_MIN_PARTITION_SIZE` samples (alpha 0.5
over 10,000 nodes of Fashion-MNIST: 6 samples a node). The server makes the same
split first, from the labels alone: the same partitioner, seed, label order, validation
rows held out (``val-fraction``) and number of partitions, so it fails exactly when the
nodes would. The number of
partitions is the number of nodes online: a simulated node's ``num-partitions``. A
deployed node states its own, which the server does not see; the nodes online are
then at most that many.
"""

from __future__ import annotations

import time
import warnings
from logging import INFO

import numpy as np
from flwr.common import log

from profl_strategy.engine.errors import ConfigError
from profl_strategy.engine.protocol import DataSpec
from profl_strategy.task.dataset import (
    DIRICHLET_MIN_PARTITION_SIZE,
    local_partitioner,
    make_partitioner,
    train_labels,
)
from profl_strategy.task.dataset_info import Partition


class UnsplittableDataError(ConfigError):
    """The train split cannot be partitioned as configured over the nodes online."""


def check_partitions(data: DataSpec, num_partitions: int, seed: int) -> None:
    """Raise :class:`UnsplittableDataError` if ``data`` cannot be cut into ``num_partitions``.

    First a bound no split can beat: IID needs a sample a partition, shards one a shard,
    Dirichlet ``DIRICHLET_MIN_PARTITION_SIZE`` samples a partition on average (which the
    library finds only after its ten attempts: 37 s at 10,000 partitions). Then, but for
    IID (equal shares that cannot fail), the library's own split.

    Parameters
    ----------
    data : DataSpec
        The run's dataset, ``data-dir``, partitioner with its parameters, and the share
        of the train split held out for validation.
    num_partitions : int
        One partition per SuperNode (a simulated node's ``num-partitions``).
    seed : int
        The run's seed: it seeds the shuffle and the partitioner, as on the nodes.
    """
    started = time.monotonic()
    labels, column = train_labels(
        data.dataset, data_dir=data.data_dir, seed=seed, val_fraction=data.val_fraction
    )
    least = least_samples(data)
    if len(labels) < least * num_partitions:
        _refuse(data, num_partitions, len(labels), f"that is {len(labels) / num_partitions:.1f} "
                f"samples a node, fewer than the {least} each partition must hold")  # fmt: skip
    if data.partitioner != "iid":  # IID's equal shares of at least one sample cannot fail
        _split(data, num_partitions, seed, labels, column)
    log(INFO, "%s split of %s's %d training samples (validation rows held out) into %d "
        "partitions: checked in %.1f s", data.partitioner, data.dataset, len(labels),
        num_partitions, time.monotonic() - started)  # fmt: skip


def least_samples(data: DataSpec) -> int:
    """Samples a partition needs at the very least: Dirichlet's minimum, one a shard, one."""
    if data.partitioner == "dirichlet":
        return DIRICHLET_MIN_PARTITION_SIZE
    return data.shards_per_partition if data.partitioner == "shards" else 1


def _split(data: DataSpec, num_partitions: int, seed: int, labels: np.ndarray, column: str) -> None:
    """Make the nodes' split of ``labels`` with flwr-datasets; refuse what it cannot make."""
    partition = Partition(
        data.dataset,
        0,
        num_partitions,
        partitioner=data.partitioner,
        alpha=data.alpha,
        shards_per_partition=data.shards_per_partition,
        seed=seed,
        data_dir=data.data_dir,
        val_fraction=data.val_fraction,
    )
    try:
        with warnings.catch_warnings():  # Dirichlet warns at every failed attempt
            warnings.simplefilter("ignore")
            if data.data_dir:  # the nodes' own partitioner: in-process nodes reuse it
                part = local_partitioner(partition)
            else:
                import datasets

                part = make_partitioner(partition, label_column=column)
                part.dataset = datasets.Dataset.from_dict({column: labels})
            last = part.load_partition(num_partitions - 1)  # splits for every partition
    except (ValueError, ZeroDivisionError) as err:  # the library's words
        _refuse(data, num_partitions, len(labels), f"flwr-datasets says: {str(err).rstrip('.')}")
    if len(last) == 0:
        _refuse(data, num_partitions, len(labels), "some partitions would be empty")


def _refuse(data: DataSpec, nodes: int, rows: int, why: str) -> None:
    """Raise the error, naming the keys a user can change."""
    what = {
        "dirichlet": f"partitioner='dirichlet' with dirichlet-alpha={data.alpha:g}",
        "shards": f"partitioner='shards' with {data.shards_per_partition} shards a node",
    }.get(data.partitioner, f"partitioner='{data.partitioner}'")
    fixes = {
        "dirichlet": "use partitioner='iid' or a larger dirichlet-alpha, or fewer nodes",
        "shards": "use partitioner='iid' or fewer shards a node "
        "(overrides='data.shards_per_partition=1'), or fewer nodes",
    }.get(data.partitioner, "use fewer nodes")
    held = f" left by val-fraction={data.val_fraction:g}" if data.val_fraction else ""
    raise UnsplittableDataError(
        f"{what} cannot split the {rows:,} training samples{held} of '{data.dataset}' into "
        f"{nodes:,} partitions, one per SuperNode: {why}. Every node would fail to load "
        f"its data in every round, so the run stops before training. To fix it, {fixes} "
        "(num-supernodes in --federation-config in simulation)."
    )
