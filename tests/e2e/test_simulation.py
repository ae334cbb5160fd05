"""A real Flower simulation (`flwr run .`) through both ProFL stages on offline data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from server_app.inprocess import simulate
from tests.support.flwr_cli import copy_app, flwr_run

pytestmark = pytest.mark.simulation


def run_config(data_dir: Path, out: Path) -> str:
    """Both stages on 20 nodes, a few rounds a step, each node on half its partition."""
    return (
        f"data-dir='{data_dir}' outputs-dir='{out}' width=0.25 data-subsample=0.5 "
        "eval-test-size=2000 "
        "min-rounds-per-step=1 max-rounds-stage1=1 max-rounds-stage2=3 em-window=2 "
        "fraction-train=0.3 seed=1 share-rounds=false overrides='method.shrink=true'"
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[str, dict]:
    tmp = tmp_path_factory.mktemp("sim")
    app = copy_app(tmp / "app")
    log, results = flwr_run(app, tmp / "home", run_config(data_dir, tmp / "home" / "out"), 20)
    assert len(results) == 1, log[-3000:]
    return log, results[0]


def test_runs_through_both_stages_above_chance(run: tuple[str, dict]) -> None:
    log, res = run
    summary = res["summary"]
    assert summary["schedule_done"], log[-3000:]
    stages = [r["stage"] for r in res["rounds"]]
    assert stages[0] == 1 and stages[-1] == 2 and sorted(stages) == stages
    assert summary["final_accuracy"] > 0.5  # chance is 0.1 on Fashion-MNIST
    assert "step s2b3 ended" in log


def test_nodes_only_train_steps_they_can_hold(run: tuple[str, dict]) -> None:
    _, res = run
    budgets = res["summary"]["budgets_mb"]
    assert len(budgets) == 20 and len(set(budgets)) > 1
    full = res["summary"]["full_model_peak_mb_est"]
    assert sum(b >= full for b in budgets) < 10  # a minority can train the full model
    for r in res["rounds"]:
        assert r["refused"] == 0 and r["rejected"] == 0
        # every node trains within its budget, with the plan it was sent (plans='exact' is
        # the default); plans add nodes that plain training (need_mb) leaves out
        assert all(
            n["budget_mb"] >= n.get("plan_need_mb", r["need_mb"]) for n in r["selected_nodes"]
        )
        assert r["eligible"] >= sum(b >= r["need_mb"] for b in budgets)
    assert any(r["eligible"] > sum(b >= full for b in budgets) for r in res["rounds"])


def test_each_round_is_logged_with_its_metrics(run: tuple[str, dict]) -> None:
    log, res = run
    for r in res["rounds"]:
        assert {
            "round",
            "stage",
            "block",
            "eligible",
            "selected",
            "em",
            "need_mb",
            "bytes_down",
            "bytes_up",
        } <= set(r)
    assert "round stage block" in log


def test_the_in_process_engine_runs_what_flwr_run_runs(
    run: tuple[str, dict], data_dir: Path, tmp_path: Path
) -> None:
    """``benchmarks.accuracy.compare --engine inprocess`` may stand in for ``flwr run``: the same
    rounds, nodes, bytes and (up to float order) accuracy."""
    _, res = run
    config = parse_config_args([run_config(data_dir, tmp_path)])
    summary = simulate(config, num_nodes=20)
    mine = json.loads((Path(summary["run_dir"]) / "results.json").read_text())["rounds"]
    same = ("round", "stage", "block", "eligible", "selected", "bytes_down", "bytes_up")
    assert [{k: r[k] for k in same} for r in mine] == [
        {k: r[k] for k in same} for r in res["rounds"]
    ]
    partitions = [[n["partition"] for n in r["selected_nodes"]] for r in mine]
    assert partitions == [[n["partition"] for n in r["selected_nodes"]] for r in res["rounds"]]
    for a, b in zip(mine, res["rounds"], strict=True):
        assert (a.get("accuracy") is None) == (b.get("accuracy") is None)
        if a.get("accuracy") is not None:
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.02)
    assert summary["final_accuracy"] == pytest.approx(res["summary"]["final_accuracy"], abs=0.02)
