"""benchmarks/accuracy/em_stops.py: where a candidate EM form would have ended a capped step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.accuracy.em_stops import load_traces, main, sweep
from profl_strategy.methods.profl.movement import CANDIDATES


def write_run(folder: Path, validation: bool = True) -> None:
    """A capped run: step s2b0 plateaus at round 4 (vector EM falls), s2b1 is the last.

    Its validation accuracy is the costs below; its test accuracy is flat, so a cost read
    from test accuracy would be 0. Without ``validation``: a run from before the split.
    """
    rounds = []
    for i in range(1, 9):
        em = dict.fromkeys(CANDIDATES, 0.9) | {"vector": 0.9 if i < 4 else 0.2}
        acc = {2: 0.50, 4: 0.70, 6: 0.71, 8: 0.72}.get(i)
        scores = {"accuracy": 0.6} | ({"val_accuracy": acc} if validation else {})
        rounds.append({"round": i, "stage": 2, "block": 0, "em_candidates": em}
                      | (scores if acc else {}))  # fmt: skip
    rounds += [{"round": 9, "stage": 2, "block": 1, "em_candidates": {}, "accuracy": 0.8}]
    run = folder / "runs" / "profl-capped-s0" / "run1"
    run.mkdir(parents=True)
    data = {"config": {"method": {"min_rounds_per_step": 3}}, "rounds": rounds}
    (run / "results.json").write_text(json.dumps(data))


def test_a_form_that_falls_stops_early_and_the_cost_is_read_from_the_evaluations(
    tmp_path: Path, capsys
) -> None:
    write_run(tmp_path)
    traces, min_rounds = load_traces([tmp_path])
    assert [t.step for t in traces] == ["s2b0"] and min_rounds == 3  # last step left out
    assert traces[0].stop_index("vector", 0.5, 2, min_rounds) == 4  # rounds 4, 5 below
    rows = {(r["form"], r["threshold"]): r for r in sweep(traces, [0.5], 2, min_rounds)}
    vector, l1 = rows[("vector", 0.5)], rows[("l1", 0.5)]
    assert vector["stopped_early"] == 1 and vector["rounds_saved"] == 3
    # at the stop (round 5): mean(0.50, 0.70); at the cap: mean(0.71, 0.72)
    assert abs(vector["cost_mean"] - 100 * (0.715 - 0.60)) < 1e-9
    assert l1["stopped_early"] == 0 and l1["cost_mean"] == 0
    assert main([str(tmp_path), "--thresholds", "0.5"]) == 0
    assert "| vector | 0 | 0.5 | 1/1 | 3.0 | +11.50 |" in capsys.readouterr().out


def test_a_min_share_holds_the_stop_until_that_share_of_the_step(tmp_path: Path) -> None:
    write_run(tmp_path)
    traces, min_rounds = load_traces([tmp_path])
    (row,) = [r for r in sweep(traces, [0.5], 2, min_rounds, [0.75]) if r["form"] == "vector"]
    # converged from round 5, but 0.75 of the step's 8 rounds is 6: index 5, 2 rounds saved
    assert row["min_share"] == 0.75 and row["rounds_saved"] == 2


def test_runs_from_before_the_validation_split_choose_nothing_unless_asked(
    tmp_path: Path, capsys
) -> None:
    write_run(tmp_path, validation=False)
    assert load_traces([tmp_path])[0] == []  # no validation figures: nothing to choose on
    with pytest.raises(SystemExit, match="no validation accuracy.*--test-scores"):
        main([str(tmp_path), "--thresholds", "0.5"])
    assert main([str(tmp_path), "--thresholds", "0.5", "--test-scores"]) == 0
    out = capsys.readouterr().out
    assert "scored on test accuracy" in out
    assert "| vector | 0 | 0.5 | 1/1 | 3.0 | +0.00 |" in out  # flat test accuracy: no cost
