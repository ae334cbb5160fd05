"""A run that cannot learn stops and says why (in-process).

Two ways a run used to go on at chance accuracy: a train split that flwr-datasets
cannot cut into one partition per node (it fails on every node, in every round), and
nodes that all fail for any other reason. The first stops before round 1, naming the
keys to change; the second after ``STOP_AFTER_FAILED_ROUNDS`` rounds without a usable
reply, with each distinct error logged once.
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
from profl_strategy.engine.protocol import QUERY_BUDGET, DataSpec
from profl_strategy.engine.round_failures import (
    STOP_AFTER_FAILED_ROUNDS,
    NodeErrors,
    errors_once,
    failed_streak,
    stop_reason,
)
from profl_strategy.task.dataset import partition_rows
from profl_strategy.task.local_data import load_local_labels, load_local_split
from profl_strategy.task.partition_check import UnsplittableDataError, check_partitions
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid

# Label skew this strong leaves some of 20 Fashion-MNIST nodes under 10 samples in each
# of flwr-datasets' ten attempts: its split fails, though 3,000 samples a node is plenty.
SKEWED = {"partitioner": "dirichlet", "dirichlet-alpha": 0.01}
FAILS_AT = "The max number of attempts (10) was reached"


class SentGrid(InProcessGrid):
    """Counts every message the server sends, by type."""

    def __init__(self, node_configs: list[dict]) -> None:
        super().__init__(node_configs)
        self.sent: list[str] = []

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        messages = list(messages)
        self.sent += [m.metadata.message_type for m in messages]
        return super().send_and_receive(messages, timeout=timeout)


def nodes(n: int) -> list[dict]:
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


def config(data_dir: Path, out: Path, **extra: object) -> dict:
    return {
        "preset": "laptop",
        "data-dir": str(data_dir),
        "outputs-dir": str(out),
        "width": 0.25,
        "memory-profile": "uniform",
        "memory-scale": 4.0,  # every node holds every step
        "fraction-train": 1.0,
        "data-subsample": 0.05,
        "eval-every": 100,
        "checkpoint-every": 0,
        **extra,
    }


# ---- the split is checked on the server before round 1 -------------------------------
@pytest.mark.filterwarnings("ignore:The specified min_partition_size")  # each node's attempts
def test_server_split_fails_where_the_nodes_split_fails(data_dir: Path) -> None:
    with pytest.raises(ValueError, match=FAILS_AT.replace("(", r"\(").replace(")", r"\)")):
        partition_rows("fmnist", 0, 20, partitioner="dirichlet", alpha=0.01,
                       shards_per_partition=2, seed=0, data_dir=str(data_dir))  # fmt: skip
    with pytest.raises(UnsplittableDataError) as err:
        check_partitions(DataSpec("fmnist", str(data_dir), "dirichlet", 0.01, 2), 20, seed=0)
    assert FAILS_AT in str(err.value)


@pytest.mark.parametrize(
    ("num_nodes", "run", "why"),
    [
        (20, SKEWED, FAILS_AT),  # the library's own split fails
        # the case: alpha 0.5 over 10,000 Fashion-MNIST nodes, 6 samples a node,
        # fewer than any Dirichlet partition may have (the library would try ten times)
        (10_000, {}, "6.0 samples a node, fewer than the 10 each partition must hold"),
    ],
)
def test_a_split_flwr_datasets_cannot_make_stops_the_run_before_round_1(
    data_dir: Path, tmp_path: Path, num_nodes: int, run: dict, why: str
) -> None:
    grid = SentGrid(nodes(num_nodes))
    with pytest.raises(UnsplittableDataError) as err:
        run_profl(grid, config(data_dir, tmp_path, **run))
    message = str(err.value)
    assert why in message
    assert f"into {num_nodes:,} partitions" in message
    for key in ("partitioner='iid'", "dirichlet-alpha", "fewer nodes", "num-supernodes"):
        assert key in message, key
    assert grid.sent == [] and grid.train_requests == []  # not even a budget query


def test_hub_data_are_checked_on_the_column_the_nodes_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With data-dir='' the labels come from the hub's FederatedDataset (faked here)."""

    class Hub:
        def load_split(self, split: str) -> datasets.Dataset:
            assert split == "train"
            return datasets.Dataset.from_dict({"img": [0] * 600, "label": [0, 1, 2] * 200})

    monkeypatch.setattr("profl_strategy.task.dataset._hub_full", lambda info, seed: Hub())
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


# ---- rounds without a usable reply ---------------------------------------------------
def test_a_run_whose_every_node_fails_stops_and_shows_the_error_once(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    grid = SentGrid(nodes(4))
    for context in grid.contexts.values():  # each node's data-dir is wrong: it crashes
        context.node_config["data-dir"] = "/no/such/dir"
    caplog.set_level(logging.INFO)
    summary = run_profl(grid, config(data_dir, tmp_path, **{"num-server-rounds": 10}))
    assert summary["rounds"] == STOP_AFTER_FAILED_ROUNDS
    assert grid.sent.count(QUERY_BUDGET) == 4  # the partitions were fine: on to training
    assert summary["failed_replies"] == 4 * STOP_AFTER_FAILED_ROUNDS
    stopped = summary["stopped"]
    assert f"no reply could be used in {STOP_AFTER_FAILED_ROUNDS} rounds in a row" in stopped
    assert "/no/such/dir" in stopped and "12x" in stopped  # the error, and how often
    saved = json.loads((Path(summary["run_dir"]) / "results.json").read_text())
    assert saved["summary"]["stopped"] == stopped
    shown = [r for r in caplog.records if "failed: error reply" in r.getMessage()]
    assert len(shown) == 1, [r.getMessage()[:200] for r in shown]  # 12 errors, shown once
    repeats = [r for r in caplog.records if "repeat an error shown above" in r.getMessage()]
    assert len(repeats) == STOP_AFTER_FAILED_ROUNDS  # one short line a round
    assert sum("stopping after round 3" in r.getMessage() for r in caplog.records) == 1


def test_rounds_with_some_usable_replies_do_not_count(data_dir: Path, tmp_path: Path) -> None:
    grid = SentGrid(nodes(4))
    for node in (1, 2, 3):  # one node in four still trains
        grid.contexts[node].node_config["data-dir"] = "/no/such/dir"
    rounds = STOP_AFTER_FAILED_ROUNDS + 1
    # min-replies=2: no round merges anything, yet every round had a usable reply
    cfg = config(data_dir, tmp_path, **{"num-server-rounds": rounds, "min-replies": 2})
    summary = run_profl(grid, cfg)
    assert summary["stopped"] is None
    assert summary["rounds"] == rounds and summary["rounds_without_update"] == rounds


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
