"""A real Flower simulation (the README's ``flwr run``, 20 SuperNodes) through both ProFL
stages on offline data; the run is the e2e layer's shared one (``tests/e2e/conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from tests.support.readme import ReadmeRun, option

pytestmark = [pytest.mark.simulation, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(readme_run: ReadmeRun) -> tuple[str, dict]:
    """The shared run's log and ``results.json``."""
    log = readme_run.log
    assert readme_run.run.returncode == 0 and len(readme_run.results) == 1, log[-3000:]
    return log, readme_run.results[0]


def num_supernodes(readme_run: ReadmeRun) -> int:
    """The simulation's size, as the README's ``--federation-config`` gives it."""
    federation = parse_config_args([option(readme_run.argv, "--federation-config")])
    return int(federation["num-supernodes"])


def test_runs_through_both_stages_above_chance(run: tuple[str, dict]) -> None:
    log, res = run
    summary = res["summary"]
    assert summary["schedule_done"], log[-3000:]
    stages = [r["stage"] for r in res["rounds"]]
    assert stages[0] == 1 and stages[-1] == 2 and sorted(stages) == stages
    assert summary["final_accuracy"] > 0.5  # chance is 0.1 on Fashion-MNIST
    assert "step s2b3 ended" in log


def test_nodes_only_train_steps_they_can_hold(run: tuple[str, dict], readme_run: ReadmeRun) -> None:
    _, res = run
    nodes = num_supernodes(readme_run)
    budgets = res["summary"]["budgets_mb"]
    assert len(budgets) == nodes and len(set(budgets)) > 1
    full = res["summary"]["full_model_peak_mb_est"]
    assert sum(b >= full for b in budgets) < nodes / 2  # a minority can train the full model
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
    run: tuple[str, dict], readme_run: ReadmeRun
) -> None:
    """``benchmarks.accuracy.compare --engine inprocess`` may stand in for ``flwr run``: the same
    rounds, nodes, bytes and (up to float order) accuracy. The in-process run is the shared
    run's twin (``server_app.inprocess.simulate`` on the same config and nodes)."""
    _, res = run
    summary = readme_run.twin
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
