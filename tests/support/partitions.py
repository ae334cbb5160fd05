"""One node's Dirichlet partition of the offline data, shared by the dataset tests."""

from __future__ import annotations

from tests.support.paths import shared_data

NUM_PARTITIONS = 10
# One node's partition: the arguments of load_partition after the dataset, id and count.
SPLIT: dict = {
    "partitioner": "dirichlet",
    "alpha": 0.3,
    "shards_per_partition": 2,
    "seed": 0,
    "data_dir": str(shared_data()),
}
