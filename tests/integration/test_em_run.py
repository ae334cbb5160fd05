"""The denoised effective movement inside a real (in-process) ProFL run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from profl_strategy.methods.profl.movement import CANDIDATES
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.runs import config, read_rounds

NODES = [{"partition-id": i, "num-partitions": 60} for i in range(6)]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("task_identity")]


def test_denoised_em_measures_the_nodes_spread(data_dir: Path, tmp_path: Path) -> None:
    run = config(
        data_dir,
        tmp_path,
        **{"em-variant": "denoised", "max-rounds-stage2": 2, "num-server-rounds": 6},
        overrides="method.shrink=true method.output_depth=1 method.em.record=true",
    )
    summary = run_profl(InProcessGrid(NODES), run)
    rounds = read_rounds(summary["run_dir"])
    stage2 = [r for r in rounds if r["stage"] == 2]
    # 3 of 6 nodes a round on non-IID partitions: their updates differ.
    assert stage2 and all(r["sampling_noise"] > 0 for r in stage2)
    ems = [r["em"] for r in stage2 if r["em"] is not None]
    assert ems and all(0.0 <= e <= 1.0 for e in ems)
    assert math.isfinite(summary["final_loss"])
    # every candidate form is logged next to the deciding one (benchmarks/accuracy/em_stops.py)
    logged = [r["em_candidates"] for r in rounds if "em_candidates" in r]
    assert logged and all(set(c) == set(CANDIDATES) for c in logged)
    values = [v for c in logged for v in c.values() if v is not None]
    assert all(0.0 <= v <= 1.0 for v in values)  # two-round steps: windows rarely fill


def test_em_stop_save_ends_the_run_before_its_budget(data_dir: Path, tmp_path: Path) -> None:
    budget = 16  # 4 stage-2 steps of 4 rounds; EM may stop each from round 3 (0.75 x 4)
    run = config(
        data_dir,
        tmp_path,
        **{
            "share-rounds": True,
            "num-server-rounds": budget,
            "em-stop": "save",
            "em-min-share": 0.75,
            "em-threshold": 0.99,
            "em-patience": 1,
        },
        overrides="method.shrink=false method.output_depth=1",
    )
    summary = run_profl(InProcessGrid(NODES), run)
    ends = [(t["step"], t["reason"], t["rounds"]) for t in summary["transitions"]]
    stopped = [e for e in ends[:-1] if e[1] == "converged"]
    assert stopped and all(rounds == 3 for _, _, rounds in stopped)
    assert ends[-1][2] == budget // 4  # the last step keeps its whole share
    assert summary["rounds"] == budget - len(stopped) < budget
