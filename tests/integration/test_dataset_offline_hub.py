"""The real hub code path, with the Hugging Face libraries forced offline, fails fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.fresh import run_fresh
from tests.support.paths import REPO


@pytest.mark.slow
def test_offline_hub_raises_runtime_error(tmp_path: Path) -> None:
    """The real hub path with HF forced offline fails fast with the advice."""
    code = (
        "from profl_strategy.task import dataset as ds\n"
        "try:\n"
        "    ds.load_partition('mnist', 0, 2, partitioner='iid', alpha=1.0,\n"
        "                      shards_per_partition=2, seed=0, data_dir='')\n"
        "except RuntimeError as err:\n"
        "    print('RAISED', err)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(REPO),
    }
    result = run_fresh(code, env=env, timeout=90)
    assert "RAISED" in result.stdout, result.stderr[-2000:]
    assert "data-dir" in result.stdout
