"""The plateau check: mean accuracy per span of rounds, and whether the last span still gains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.accuracy.plateau import main, part_means
from tests.support.reports import fake_run


def validated_run(out: Path, method: str, vals: list[float], seed: int = 0) -> None:
    """A run whose validation curve is ``vals`` and whose test curve is flat: the verdict
    must come from the validation curve."""
    fake_run(out, method, [0.5] * len(vals), need=1.0, plan_need=1.0, seed=seed, vals=vals)


def test_part_means_split_rounds_into_equal_spans() -> None:
    means = part_means([1, 2, 3, 4, 5, 6, 7, 8], [0.1, 0.3, 0.5, 0.5, 0.6, 0.8, 0.9, 0.9], 8, 4)
    assert means == pytest.approx([0.2, 0.5, 0.7, 0.9])
    # evaluations every 4th round of 8, in 4 spans: two spans have none
    sparse = part_means([4, 8], [0.4, 0.8], 8, 4)
    assert math.isnan(sparse[0]) and sparse[1] == 0.4 and math.isnan(sparse[2])


def test_rising_and_flat_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    validated_run(out, "fedavg", [0.2, 0.4, 0.6, 0.8])
    validated_run(out, "fedavg", [0.2, 0.5, 0.6, 0.7], seed=1)
    validated_run(out, "allsmall", [0.5, 0.7, 0.8, 0.805])
    main([str(out), "--method", "fedavg"])
    text = capsys.readouterr().out
    assert "| 0 | 0.200 | 0.400 | 0.600 | 0.800 | +20.0 |" in text
    assert "still rising: the last part adds +15.0 points, mean of 2 seed(s)" in text
    main([str(out), "--method", "allsmall"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("flat: the last part adds +0.5")
    with pytest.raises(SystemExit, match="no finished run of method 'depthfl'"):
        main([str(out), "--method", "depthfl"])


def test_upto_reads_only_the_first_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    validated_run(out, "fedavg", [0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8])
    main([str(out), "--method", "fedavg", "--parts", "2"])
    assert "| 0 | 0.500 | 0.800 | +30.0 |" in capsys.readouterr().out
    main([str(out), "--method", "fedavg", "--parts", "2", "--upto", "4"])
    assert "| 0 | 0.300 | 0.700 | +40.0 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="ran 8 rounds, not 9"):
        main([str(out), "--method", "fedavg", "--upto", "9"])


def test_runs_from_before_the_validation_split_need_test_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "fedavg", [0.2, 0.4, 0.6, 0.8], need=1.0, plan_need=1.0)
    with pytest.raises(SystemExit, match="no validation accuracy.*--test-scores"):
        main([str(out), "--method", "fedavg"])
    main([str(out), "--method", "fedavg", "--test-scores"])
    assert "| 0 | 0.200 | 0.400 | 0.600 | 0.800 | +20.0 |" in capsys.readouterr().out
