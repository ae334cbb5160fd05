"""The server's validation split over the 60,000 Fashion-MNIST training rows, and in a run.

The validation rows are in no node's partition, the partitions and they make up the train
split, a fresh process cuts the same rows (server and nodes never share memory), a run
without a validation split gets the partitions it always got, and a short run records the
validation accuracy of every evaluated round and of the delivered model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest

from profl_strategy.task import dataset as ds
from profl_strategy.task.dataset_info import Partition
from profl_strategy.task.local_data import load_local_labels
from profl_strategy.task.split_order import seeded_order, split_order
from server_app.inprocess import simulate
from tests.support.fresh import run_fresh
from tests.support.partitions import NUM_PARTITIONS, SPLIT
from tests.support.paths import REPO, shared_data

DATA_DIR = shared_data()
DATA = str(DATA_DIR)
TRAIN_ROWS = 60_000
VAL = 0.1

pytestmark = [
    pytest.mark.skipif(
        not (DATA_DIR / "FashionMNIST" / "raw").is_dir(),
        reason=f"offline data not found in {DATA_DIR} (set PROFL_DATA_DIR)",
    ),
    pytest.mark.usefixtures("isolated_cache"),  # partitions in a fresh cache, never in ~
]

# Prints one digest of the validation rows and every partition's rows, as a node or the
# server computes them in a process of its own.
DIGEST = """
import hashlib, json, sys
import numpy as np
from profl_strategy.task import dataset as ds
from profl_strategy.task.split_order import split_order
split, n = json.loads(sys.argv[1]), int(sys.argv[2])
val = split_order(60_000, split["seed"], split["val_fraction"])[0]
parts = [ds.partition_rows("fmnist", pid, n, **split) for pid in range(n)]
print(hashlib.sha256(np.concatenate([val, *parts]).astype(np.int64).tobytes()).hexdigest())
"""


def _parts(val_fraction: float, **change: object) -> list[np.ndarray]:
    split = SPLIT | {"val_fraction": val_fraction} | change
    return [ds.partition_rows("fmnist", pid, NUM_PARTITIONS, **split) for pid in range(10)]


def _digest(val: np.ndarray, parts: list[np.ndarray]) -> str:
    return hashlib.sha256(np.concatenate([val, *parts]).astype(np.int64).tobytes()).hexdigest()


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_validation_rows_are_in_no_partition_and_the_sizes_add_up(kind: str) -> None:
    val, _ = split_order(TRAIN_ROWS, SPLIT["seed"], VAL)
    parts = _parts(VAL, partitioner=kind)
    assert len(val) == 6_000 and sum(len(p) for p in parts) == TRAIN_ROWS - 6_000
    # disjoint from every partition, partitions disjoint from each other, all rows covered
    assert len(np.unique(np.concatenate([val, *parts]))) == TRAIN_ROWS
    images, labels = ds.load_validation(
        "fmnist", data_dir=DATA, seed=SPLIT["seed"], val_fraction=VAL
    )
    full_x, full_y = ds._local_full("fmnist", "train", DATA)
    np.testing.assert_array_equal(labels, full_y[np.sort(val)])
    np.testing.assert_array_equal(images, full_x[np.sort(val)])
    # and a node's loaded partition holds none of those rows
    got = ds.load_partition(
        "fmnist", 2, NUM_PARTITIONS, **(SPLIT | {"partitioner": kind, "val_fraction": VAL})
    )
    np.testing.assert_array_equal(got[1], full_y[parts[2]])


def test_the_split_is_the_same_in_a_fresh_process_and_after_clearing_caches() -> None:
    split = SPLIT | {"seed": 3, "val_fraction": VAL}
    val, _ = split_order(TRAIN_ROWS, 3, VAL)
    here = _digest(val, _parts(VAL, seed=3))
    ds.clear_caches()  # the partitioner rebuilt from scratch
    assert _digest(split_order(TRAIN_ROWS, 3, VAL)[0], _parts(VAL, seed=3)) == here
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = run_fresh(DIGEST, json.dumps(split), str(NUM_PARTITIONS), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == here
    other = _digest(split_order(TRAIN_ROWS, 4, VAL)[0], _parts(VAL, seed=4))
    assert other != here  # and it follows the seed


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_no_validation_split_gives_the_partitions_of_before(kind: str) -> None:
    """``val-fraction=0``: the partitioner sees the seeded order of every row, as it did
    before there was a validation split, so every partition is the one it was."""
    labels = load_local_labels("fmnist", "train", DATA)
    order = seeded_order(len(labels), SPLIT["seed"])
    spec = SPLIT | {"partitioner": kind}
    before = ds.make_partitioner(Partition("fmnist", 0, NUM_PARTITIONS, **spec))
    before.dataset = datasets.Dataset.from_dict({"label": labels[order], "row": order})
    for pid, rows in enumerate(_parts(0.0, partitioner=kind)):
        np.testing.assert_array_equal(rows, np.asarray(before.load_partition(pid)["row"]))


@pytest.mark.usefixtures("task_identity", "one_torch_thread")
def test_a_run_records_validation_accuracy_every_evaluated_round(tmp_path: Path) -> None:
    summary = simulate(
        {
            "preset": "laptop",
            "method": "fedavg",
            "data-dir": DATA,
            "outputs-dir": str(tmp_path),
            "width": 0.25,
            "memory-profile": "uniform",
            "seed": 1,
            "data-subsample": 0.02,  # about 180 rows a node: seconds a round
            "num-server-rounds": 3,
            "eval-every": 2,  # rounds 2 and 3 (the last) are scored
            "eval-test-size": 300,
            "val-fraction": VAL,
            "checkpoint-every": 0,
        },
        num_nodes=3,
    )
    results = json.loads((Path(summary["run_dir"]) / "results.json").read_text())
    scored = [r for r in results["rounds"] if "accuracy" in r]
    assert [r["round"] for r in scored] == [2, 3]
    for r in scored:
        assert 0.0 <= r["val_accuracy"] <= 1.0 and np.isfinite(r["val_loss"])
    assert all("val_accuracy" not in r for r in results["rounds"] if "accuracy" not in r)
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and np.isfinite(summary["val_loss"])
    assert results["summary"]["val_accuracy"] == summary["val_accuracy"]
    assert results["config"]["data"]["val_fraction"] == VAL
