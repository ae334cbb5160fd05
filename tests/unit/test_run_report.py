"""The round line's progress and time left, and the run's closing lines for people."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from benchmarks.accuracy.runner import ROUND
from server_app.report import clock, measured_by_tier, summary_lines, time_left
from server_app.results import RunRecorder, round_line


def test_time_left_ignores_the_start_up_round() -> None:
    # Round 1 pays Ray's start-up; the rest take 2 s: 8 rounds left take 16 s.
    assert time_left([60.0, 2.0, 2.0], done=3, total=11) == 16.0
    assert time_left([60.0], done=1, total=3) == 120.0  # nothing better yet
    assert time_left([2.0, 2.0], done=5, total=5) is None


def test_clock() -> None:
    assert [clock(None), clock(37), clock(125), clock(3725)] == ["-", "37s", "2m05s", "1h02m"]


def test_round_line_shows_progress_and_still_parses() -> None:
    record = {"round": 12, "stage": 2, "block": 1, "eligible": 20, "selected": 4,
              "accuracy": 0.81, "loss": 0.5, "need_mb": 10.2, "round_s": 3.14}  # fmt: skip
    line = round_line(record, total=80, left=125.0)
    assert "12/80" in line and line.rstrip().endswith("3.1s  2m05s")
    m = ROUND.match(line)
    assert m and (m["round"], m["sel"], m["need"], m["secs"]) == ("12", "4", "10.20", "3.1")
    assert (m["acc"], m["val"], m["loss"]) == ("0.8100", "-", "0.5000")  # no validation split
    m = ROUND.match(round_line(record | {"val_accuracy": 0.79}, total=80, left=125.0))
    assert m and (m["acc"], m["val"], m["loss"], m["need"]) == (
        "0.8100",
        "0.7900",
        "0.5000",
        "10.20",
    )


def _measured(mb: float, budget: float, policy: str = "strict") -> dict:
    return {"measured_mb": mb, "predicted_mb": budget - 1, "budget_mb": budget, "policy": policy}


def test_measured_by_tier_takes_the_worst_call_of_each_tier() -> None:
    budgets = {1: 5.0, 2: 5.0, 3: 20.0}
    rounds = [
        {"measured_nodes": {"1": _measured(9.0, 10.0), "3": _measured(30.0, 25.0)}},
        {"measured_nodes": {"2": _measured(9.5, 10.5)}},
        {"measured_nodes": {}},
    ]
    small, large = measured_by_tier(rounds, budgets)
    assert (small["tier_mb"], small["nodes"], small["calls"], small["over"]) == (5.0, 2, 2, 0)
    assert (small["worst_mb"], small["budget_mb"]) == (9.5, 10.5)
    assert (large["tier_mb"], large["over"], large["worst_mb"]) == (20.0, 1, 30.0)


def test_the_run_ends_in_words_not_json(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    recorder = RunRecorder(tmp_path, {"seed": 0}, total_rounds=2)
    calls = {"7": _measured(9.0, 10.0, "fast")}
    for r in (1, 2):
        record = {"round": r, "stage": 2, "block": 0, "accuracy": 0.5 + r / 10}
        recorder.round(record | {"round_s": 1.0, "measured_nodes": calls})
    summary = {"final_accuracy": 0.7, "val_accuracy": 0.72, "seed": 0, "rounds": 2}
    with caplog.at_level(logging.INFO, logger="flwr"):
        recorder.finish(summary, {7: 5.0})
    text = caplog.text
    assert "final test accuracy 0.7000 (seed 0, 2 rounds" in text
    assert "validation accuracy 0.7200" in text
    assert "tier    5.00 MB,   1 nodes,    2 calls: worst    9.0 MB" in text
    assert "2 calls: worst    9.0 MB against a call budget of   10.0 MB, 0 over" in text
    assert str(tmp_path / "results.json") in text
    assert "{" not in text.split("final test accuracy")[1]  # no JSON dump
    stored = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert stored["measured_by_tier"][0]["calls"] == 2


def test_summary_lines_name_problems() -> None:
    lines = summary_lines(
        {"final_accuracy": 0.1, "seed": 1, "rounds": 3, "refusals": 2, "failed_replies": 0,
         "stopped": "no reply could be used in 3 rounds in a row"},
        "r.json",
    )  # fmt: skip
    assert any("refusals: 2" in line for line in lines)
    assert any("stopped before its schedule ended: no reply" in line for line in lines)
