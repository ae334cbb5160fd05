"""Each baseline in short in-process runs: every reply merged, static BN asked when read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from client_app.baselines import bn_statistics, train_depth, train_width
from profl_strategy.engine.protocol import QUERY_BN_STATS, TRAIN_DEPTH, TRAIN_WIDTH
from server_app.app import run_profl
from tests import inprocess_grid
from tests.inprocess_grid import InProcessGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def baseline_grid(task_identity: None) -> None:
    """InProcessGrid routes the baselines' message types to their handlers."""
    assert inprocess_grid.HANDLERS[TRAIN_WIDTH] is train_width
    assert inprocess_grid.HANDLERS[TRAIN_DEPTH] is train_depth
    assert inprocess_grid.HANDLERS[QUERY_BN_STATS] is bn_statistics


@pytest.mark.slow
@pytest.mark.parametrize("method", ["allsmall", "heterofl", "fedrolex", "depthfl", "inclusivefl"])
def test_each_baseline_runs_and_evaluates_in_process(
    method: str, data_dir: Path, tmp_path: Path, baseline_grid: None
) -> None:
    """Two rounds on tiny data complete, every reply is merged, the model is evaluated."""
    nodes = [{"partition-id": i, "num-partitions": 300} for i in range(3)]
    summary = run_profl(
        InProcessGrid(nodes),
        {
            "preset": "laptop",
            "method": method,
            "data-dir": str(data_dir),
            "outputs-dir": str(tmp_path),
            "width": 0.25,
            "memory-profile": "uniform",
            "memory-scale": 2.5,  # depth tiers cost more than the full model
            "seed": 1,
            "fraction-train": 1.0,
            "num-server-rounds": 2,
            "eval-every": 100,
            "checkpoint-every": 0,
        },
    )
    assert summary["rounds"] == 2 and summary["schedule_done"]
    assert 0.0 <= summary["final_accuracy"] <= 1.0 and np.isfinite(summary["final_loss"])
    assert summary["refusals"] == 0 and summary["rejected_replies"] == 0
    assert summary["rounds_without_update"] == 0
    rounds = json.loads(next(tmp_path.rglob("results.json")).read_text())["rounds"]
    static_bn = method in ("heterofl", "fedrolex")
    # Static BN asks for statistics only when the model is read: here, after the last round.
    assert [r.get("bn_stats_nodes") for r in rounds] == [None, 3 if static_bn else None]


def _heterofl_run(tmp_path: Path, data_dir: Path, eval_every: int) -> tuple[dict, list[dict]]:
    nodes = [{"partition-id": i, "num-partitions": 300} for i in range(4)]
    summary = run_profl(
        InProcessGrid(nodes),
        {
            "preset": "laptop",
            "method": "heterofl",
            "data-dir": str(data_dir),
            "outputs-dir": str(tmp_path / f"every{eval_every}"),
            "width": 0.25,
            "memory-profile": "uniform",
            "memory-scale": 2.5,
            "seed": 2,
            "fraction-train": 0.5,
            "num-server-rounds": 4,
            "eval-every": eval_every,
            "checkpoint-every": 0,
        },
    )
    results = next((tmp_path / f"every{eval_every}").rglob("results.json"))
    return summary, json.loads(results.read_text())["rounds"]


@pytest.mark.slow
def test_static_bn_asked_only_when_read_changes_no_score(
    data_dir: Path, tmp_path: Path, baseline_grid: None
) -> None:
    """Training reads batch statistics only, so asking for the global model's BN statistics
    when it is scored (every 2nd round) instead of after every merge changes no score."""
    every_round, log_1 = _heterofl_run(tmp_path, data_dir, eval_every=1)
    when_read, log_2 = _heterofl_run(tmp_path, data_dir, eval_every=2)
    assert [r.get("bn_stats_nodes") for r in log_1] == [2] * 4
    assert [r.get("bn_stats_nodes") for r in log_2] == [None, 2, None, 2]
    assert [r.get("accuracy") for r in log_2 if "accuracy" in r] == [
        r["accuracy"] for r in log_1[1::2]
    ]
    assert [r["train_loss"] for r in log_2] == [r["train_loss"] for r in log_1]
    assert when_read["final_accuracy"] == every_round["final_accuracy"]
    assert when_read["final_loss"] == every_round["final_loss"]
