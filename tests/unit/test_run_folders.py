"""What ties a run to its folder: the configuration's fingerprint, one folder per run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from profl_strategy.engine.checkpoint import fingerprint
from profl_strategy.run.config import compose_config
from server_app.app import run_dir_of
from tests.support.runs import config


def test_checkpoint_fingerprint_ignores_only_the_resumable_keys() -> None:
    cfg = OmegaConf.to_container(compose_config({}), resolve=True)
    base = fingerprint(cfg)
    changed = copy.deepcopy(cfg)
    changed["num_rounds"] += 5
    changed["train"] |= {"timeout": 5.0, "channels_last": not cfg["train"]["channels_last"]}
    assert fingerprint(changed) == base
    changed["train"]["lr"] = 2 * cfg["train"]["lr"]
    assert fingerprint(changed) != base


def test_runs_started_in_one_second_get_their_own_folders(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server_app.app.time.strftime", lambda _: "20261203-165252")
    cfg = compose_config(config(data_dir, tmp_path / "out"))
    first, second, third = (run_dir_of(cfg) for _ in range(3))
    assert first.name.endswith("-20261203-165252") and first.is_dir()
    assert (second.name, third.name) == (first.name + "-2", first.name + "-3")
    assert second.is_dir() and third.is_dir()
