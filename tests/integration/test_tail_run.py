"""Tail averaging in a ProFL run: only the last step's rounds enter the mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.runs import config

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("task_identity")
def test_a_profl_run_delivers_its_last_step_averaged(data_dir: Path, tmp_path: Path) -> None:
    """Only the last step's rounds enter the mean (earlier steps are other models)."""
    nodes = [{"partition-id": i, "num-partitions": 60} for i in range(6)]
    summary = run_profl(InProcessGrid(nodes), config(data_dir, tmp_path, **{"final-average": 5}))
    assert summary["schedule_done"]
    last_step = summary["transitions"][-1]["rounds"]
    assert summary["final_average_rounds"] == min(5, last_step) == 2
    assert 0.0 <= summary["final_accuracy_last_round"] <= 1.0
