"""The local SuperLink's start-up notes: where it runs, and what a per-run install costs."""

from __future__ import annotations

import sys
from pathlib import Path

from server_app import local_superlink


def test_a_per_run_install_is_named_with_the_superlink_pid(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path / ".flwr" / "runtime-envs" / "123"))
    where, costly = local_superlink.startup_notes()
    assert sys.executable in where
    assert costly is not None and "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in costly
    assert "--stop" in costly or "kill " in costly
    monkeypatch.delenv("VIRTUAL_ENV")
    assert local_superlink.startup_notes()[1] is None
