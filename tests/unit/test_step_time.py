"""benchmarks.speed.step_time: one row per (width ratio, mode), with FLOPs that follow the width."""

from __future__ import annotations

import sys

import pytest

from benchmarks.speed import step_time


@pytest.mark.slow
def test_step_time_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv = ["step_time", "--preset", "fmnist_cpu", "--ratios", "1,0.5", "--steps", "2"]
    monkeypatch.setattr(sys, "argv", [*argv, "--warmup", "1"])
    step_time.main()
    rows = [r.split(" | ") for r in capsys.readouterr().out.splitlines() if r[:3] in ("| 1", "| 0")]
    expected = [(q, m) for q in ("1", "0.5") for m in step_time.MODES]
    assert [(r[0][2:], r[1]) for r in rows] == expected
    assert all(float(r[3]) > 0 for r in rows)
    full, half = float(rows[0][2]), float(rows[len(step_time.MODES)][2])
    assert half < 0.5 * full  # half the channels: about a quarter of the convolutions' FLOPs
