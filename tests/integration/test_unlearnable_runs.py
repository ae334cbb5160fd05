"""A run that cannot learn stops and says why (in-process runs).

A split flwr-datasets cannot make stops the run before round 1, naming the keys to
change; nodes that all fail stop it after ``STOP_AFTER_FAILED_ROUNDS`` rounds without a
usable reply, each distinct error logged once. The checks themselves:
``tests/unit/test_unlearnable.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from profl_strategy.engine.protocol import QUERY_BUDGET
from profl_strategy.engine.round_failures import STOP_AFTER_FAILED_ROUNDS
from profl_strategy.task.partition_check import UnsplittableDataError
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
@pytest.mark.parametrize(
    ("num_nodes", "run", "why"),
    [
        (20, SKEWED, FAILS_AT),  # the library's own split fails
        # the case: alpha 0.5 over 10,000 Fashion-MNIST nodes, 5.4 samples a node
        # (54,000 after the validation split), fewer than any Dirichlet partition may have
        # (the library would try ten times)
        (10_000, {}, "5.4 samples a node, fewer than the 10 each partition must hold"),
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


# ---- rounds without a usable reply ---------------------------------------------------
@pytest.mark.slow
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


@pytest.mark.slow
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
