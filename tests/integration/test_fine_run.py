"""ProFL end to end on a finer split: every BasicBlock of ResNet-18 is a step (in-process)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from profl_strategy.task.dataset import make_loader
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.runs import config

pytestmark = pytest.mark.slow

NODES = [{"partition-id": i, "num-partitions": 300} for i in range(4)]


# channels-last: oneDNN takes other kernels (1x1 and strided convolutions, backward too)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.usefixtures("task_identity")
def test_profl_trains_every_block_of_resnet18_fine(
    data_dir: Path, tmp_path: Path, channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    layouts: set[bool] = set()  # what the clients' and the test split's loaders were asked

    def recording(*args: object, **kwargs: object) -> DataLoader:
        layouts.add(bool(kwargs.get("channels_last", False)))
        return make_loader(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("profl_strategy.task.dataset.make_loader", recording)  # node.py: lazy
    monkeypatch.setattr("profl_strategy.task.evaluate.make_loader", recording)
    grid = InProcessGrid(NODES)
    keys = {"max-rounds-stage2": 1, "channels-last": channels_last}
    summary = run_profl(
        grid, config(data_dir, tmp_path, model="resnet18_fine", width=0.125, **keys)
    )
    assert summary["schedule_done"]
    trained = {(stage, block) for _, stage, block in grid.train_requests}
    assert trained == {(s, b) for s in (1, 2) for b in range(9)}  # stem + 8 BasicBlocks
    assert summary["refusals"] == 0 and summary["rejected_replies"] == 0
    assert math.isfinite(summary["final_loss"])
    assert layouts == {channels_last}
