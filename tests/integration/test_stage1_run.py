"""A ProFL run with the authors' stage 1: initial-weights prefix, condensing by distillation."""

from __future__ import annotations

from pathlib import Path

import pytest

from profl_strategy.methods.profl.step_model import STAGE_CONDENSE
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.runs import config, read_rounds

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("task_identity")
def test_profl_run_with_the_authors_stage_1(data_dir: Path, tmp_path: Path) -> None:
    nodes = [{"partition-id": i, "num-partitions": 60} for i in range(6)]
    run = config(
        data_dir,
        tmp_path,
        overrides="method.shrink=true method.output_depth=0 method.stage1_prefix=initial "
        "method.condense=distill method.condense_rounds=2 method.memory_aware=false",
    )
    summary = run_profl(InProcessGrid(nodes), run)
    rounds = read_rounds(summary["run_dir"])
    condense = [r for r in rounds if r["stage"] == STAGE_CONDENSE]
    assert sorted({r["block"] for r in condense}) == [1, 2, 3]
    assert len(condense) == 6  # two rounds per condensing step
    assert all(r["replies"] > 0 for r in condense)
    assert rounds[-1]["stage"] == 2 and rounds[-1]["block"] == 3
