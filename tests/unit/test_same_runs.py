"""``benchmarks.accuracy.same_runs``: two comparisons equal run by run, whatever their seconds."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from benchmarks.accuracy.run_files import pack
from benchmarks.accuracy.same_runs import compare_rows, main


def results(acc: float, seconds: float, run_dir: str) -> dict[str, Any]:
    rounds = [
        {"round": r, "accuracy": acc + r / 100, "train_loss": 1.0 / r, "round_s": seconds / 3}
        for r in (1, 2, 3)
    ]
    summary = {"final_accuracy": acc + 0.03, "rounds": 3, "run_dir": run_dir}
    return {"rounds": rounds, "summary": summary, "wall_s": seconds}


def write(out: Path, runs: dict[str, dict[str, Any]], wall_seconds: float) -> Path:
    for name, data in runs.items():
        run = out / "runs" / name / f"{name}-20261204"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(data))
    (out / "manifest.json").write_text(json.dumps({"wall_seconds": wall_seconds}))
    return out


def test_equal_runs_in_other_time_and_folder_are_the_same(tmp_path: Path, capsys) -> None:
    runs = {"fedavg-s0": results(0.5, 30.0, "/a/x"), "profl-s0": results(0.6, 20.0, "/a/y")}
    a = write(tmp_path / "a", runs, 50.0)
    faster = {"fedavg-s0": results(0.5, 15.0, "/b/x"), "profl-s0": results(0.6, 15.0, "/b/y")}
    b = write(tmp_path / "b", faster, 25.0)
    pack(b)  # a packed folder reads as a fresh one
    assert [r["same"] for r in compare_rows(a, b)] == [True, True]
    assert main([str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert "| **all runs** | **2/2** | 50 | 30 | -40% |" in table
    assert "| end to end (manifests) | | 50 | 25 | -50% |" in table


def test_a_changed_round_or_a_missing_run_fails(tmp_path: Path, capsys) -> None:
    runs = {"fedavg-s0": results(0.5, 30.0, "/a"), "fedavg-s1": results(0.4, 30.0, "/a")}
    a = write(tmp_path / "a", runs, 60.0)
    changed = copy.deepcopy(runs["fedavg-s0"])
    changed["rounds"][1]["train_loss"] += 1e-7
    b = write(tmp_path / "b", {"fedavg-s0": changed}, 30.0)
    rows = compare_rows(a, b)
    assert [(r["run"], r["same"]) for r in rows] == [("fedavg-s0", False), ("fedavg-s1", None)]
    assert main([str(a), str(b)]) == 1
    assert "| fedavg, 2 runs | 0/2 |" in capsys.readouterr().out
