"""The whole CIFAR-10 train split, decoded from its 50,000 JPEGs, matches its index.

Decoding the split takes most of this test's time (about 20 s on one core); the test
split's loaders and caches are checked in ``tests/unit/test_dataset.py``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from profl_strategy.task import dataset as ds
from profl_strategy.task.local_data import CIFAR10_CLASSES, CIFAR10_FOLDER
from tests.support.paths import shared_data

DATA_DIR = shared_data()
DATA = str(DATA_DIR)

pytestmark = [
    pytest.mark.slow,  # decodes the 50,000 training JPEGs
    pytest.mark.skipif(
        not (DATA_DIR / CIFAR10_FOLDER).is_dir(),
        reason=f"offline CIFAR-10 not found in {DATA_DIR} (set PROFL_DATA_DIR)",
    ),
    pytest.mark.usefixtures("isolated_cache"),  # decoded in a fresh cache, never in ~
]


def test_cifar10_images_and_labels_match_index() -> None:
    images, labels = ds._local_full("cifar10", "train", DATA)
    assert images.shape == (50000, 32, 32, 3) and images.dtype == np.uint8
    with open(DATA_DIR / CIFAR10_FOLDER / "train_index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i in (0, 1, 2, 12345, 49999):
        row = rows[i]
        assert int(row["orig_index"]) == i
        assert labels[i] == int(row["label"])
        assert f"/{CIFAR10_CLASSES[labels[i]]}/" in row["path"]
    assert images.std() > 40  # real pictures, not an empty buffer
    part_x, part_y = ds.load_partition(
        "cifar10", 0, 5, partitioner="iid", alpha=1.0, shards_per_partition=2, seed=0, data_dir=DATA
    )
    assert part_x.shape == (10000, 32, 32, 3) and len(part_y) == 10000
