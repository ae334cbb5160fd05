"""A run that cannot learn stops and says why: the checks that stop it.

Two ways a run used to go on at chance accuracy: a train split that flwr-datasets
cannot cut into one partition per node (it fails on every node, in every round), and
nodes that all fail for any other reason. The first stops before round 1, naming the
keys to change; the second after ``STOP_AFTER_FAILED_ROUNDS`` rounds without a usable
reply, with each distinct error logged once. Here the checks themselves; the runs that
stop: ``tests/integration/test_unlearnable_runs.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest
from flwr.common.logger import FLOWER_LOGGER

from benchmarks.accuracy.runner import RunSpec
from benchmarks.scale.nodes import outcome
from profl_strategy.engine.protocol import DataSpec
from profl_strategy.engine.round_failures import NodeErrors, errors_once, failed_streak, stop_reason
from profl_strategy.task.dataset import partition_rows
from profl_strategy.task.local_data import load_local_labels, load_local_split
from profl_strategy.task.partition_check import UnsplittableDataError, check_partitions

FAILS_AT = "The max number of attempts (10) was reached"


# ---- the split is checked on the server before round 1 -------------------------------
@pytest.mark.filterwarnings("ignore:The specified min_partition_size")  # each node's attempts
def test_server_split_fails_where_the_nodes_split_fails(data_dir: Path) -> None:
    with pytest.raises(ValueError, match=FAILS_AT.replace("(", r"\(").replace(")", r"\)")):
        partition_rows("fmnist", 0, 20, partitioner="dirichlet", alpha=0.01,
                       shards_per_partition=2, seed=0, data_dir=str(data_dir))  # fmt: skip
    with pytest.raises(UnsplittableDataError) as err:
        check_partitions(DataSpec("fmnist", str(data_dir), "dirichlet", 0.01, 2), 20, seed=0)
    assert FAILS_AT in str(err.value)


def test_hub_data_are_checked_on_the_column_the_nodes_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With data-dir='' the labels come from the hub's FederatedDataset (faked here)."""

    class Hub:
        def load_split(self, split: str) -> datasets.Dataset:
            assert split == "train"
            return datasets.Dataset.from_dict({"img": [0] * 600, "label": [0, 1, 2] * 200})

    monkeypatch.setattr("profl_strategy.task.dataset._hub_full", lambda info, seed, val: Hub())
    check_partitions(DataSpec("cifar10", "", "shards", 0.5, 2), 100, seed=0)
    with pytest.raises(UnsplittableDataError, match="3.0 samples a node.*fewer shards a node"):
        check_partitions(DataSpec("cifar10", "", "shards", 0.5, 4), 200, seed=0)
    with pytest.raises(UnsplittableDataError, match="flwr-datasets says"):
        check_partitions(DataSpec("cifar10", "", "dirichlet", 0.01, 2), 20, seed=0)


def test_iid_needs_a_sample_a_node(data_dir: Path) -> None:
    spec = DataSpec("fmnist", str(data_dir), "iid", 0.5, 2)
    check_partitions(spec, 60_000, seed=0)  # one sample each: a split, if a poor one
    with pytest.raises(UnsplittableDataError, match="0.9 samples a node.*use fewer nodes"):
        check_partitions(spec, 65_000, seed=0)


def test_the_check_reads_the_labels_the_nodes_split(data_dir: Path) -> None:
    assert (
        load_local_labels("fmnist", "train", str(data_dir))
        == load_local_split("fmnist", "train", str(data_dir))[1]
    ).all()


def record(n: int, selected: int = 4, aggregated: int = 0, **more: int) -> dict:
    return {"round": n, "selected": selected, "aggregated": aggregated, "replies": selected,
            "failed": selected - aggregated, **more}  # fmt: skip


def test_only_rounds_in_a_row_that_sent_orders_and_used_nothing_count() -> None:
    errors = NodeErrors()
    failed = [record(n) for n in (3, 4, 5)]
    assert len(failed_streak([record(1), record(2, aggregated=1), *failed])) == 3
    assert stop_reason([record(1, aggregated=2), *failed], errors) is not None
    # a round that sent nothing (no node could hold the step) breaks the streak
    assert stop_reason([failed[0], record(4, selected=0), *failed[1:]], errors) is None
    assert stop_reason(failed[:2], errors) is None
    silent = [record(n, replies=0, failed=0) for n in (1, 2, 3)]
    assert "12 missing" in (stop_reason(silent, errors) or "")


def test_errors_that_differ_only_by_process_are_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = NodeErrors()
    # what Flower's Ray backend sends back, as seen in a simulation's log
    reason = (
        "<class 'ClientAppException'>:<'ray::ClientAppActor.run() (pid={0}, ip=192.0.2.2, "
        "actor_id=7be{0}, repr=<A object at 0x7fc{0}>)\n"
        '  File "x.py", line 3\nValueError: no data\'>'
    )
    new = [errors.add(1, node, reason.format(1000 + node)) for node in range(5)]
    assert new == [True, False, False, False, False]
    assert errors.describe() == "ValueError: no data (5x, first from node 0 in round 1)"
    assert errors.add(2, 7, "RuntimeError('other')")
    with errors_once():  # Flower's own ERROR record of each failed call, once
        for pid in (1, 2, 3):
            FLOWER_LOGGER.error("ray::ClientAppActor.run() (pid=%d) failed", pid)
        FLOWER_LOGGER.warning("a warning")
        FLOWER_LOGGER.warning("a warning")
    FLOWER_LOGGER.error("ray::ClientAppActor.run() (pid=4) failed")  # filter removed
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert lines == [
        "ray::ClientAppActor.run() (pid=1) failed",
        "ray::ClientAppActor.run() (pid=4) failed",
    ]
    assert [r.getMessage() for r in caplog.records].count("a warning") == 2


def test_the_scale_benchmark_marks_runs_that_could_not_learn_as_failed(tmp_path: Path) -> None:
    finished = RunSpec("profl", 0, tmp_path, status="ok")
    assert outcome(finished, {"stopped": None}) == ("ok", "")
    assert outcome(finished, {"stopped": "no reply could be used"}) == (
        "failed",
        "stopped: no reply could be used",
    )
    (tmp_path / "flwr.log").write_text(
        'Traceback (most recent call last):\n  File "engine.py", line 3, in start\n'
        "profl_strategy.task.partition_check.UnsplittableDataError: partitioner='dirichlet' "
        "cannot split\n\x1b[91mERROR \x1b[0m:     ServerApp failed\n"
    )
    crashed = RunSpec("profl", 0, tmp_path, status="failed", error="flwr run exited with 1")
    assert outcome(crashed, {}) == (
        "failed",
        "UnsplittableDataError: partitioner='dirichlet' cannot split",
    )


def test_compare_marks_a_stopped_run_failed(tmp_path: Path) -> None:
    from benchmarks.accuracy.runner import record_outcome

    for name, summary in (("ok", {"final_accuracy": 0.8}), ("stopped", {"stopped": "3 rounds"})):
        spec = RunSpec("profl", 0, tmp_path / name)
        (spec.out / "run").mkdir(parents=True)
        (spec.out / "run" / "results.json").write_text(json.dumps({"summary": summary}))
        record_outcome(spec, 0)
        assert spec.status == ("ok" if name == "ok" else "failed"), spec
    assert "the run stopped: 3 rounds" in spec.error
