"""The comparison report: table, plots and the README section, from results.json files.

Which commit each run ran at (git): ``tests/integration/test_compare_revision.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.accuracy.compare import main
from benchmarks.accuracy.plots import band
from benchmarks.accuracy.report import report, update_readme
from benchmarks.accuracy.tables import PLOTS, by_method, curve, load_runs, write_tables
from tests.support.reports import fake_run


def test_report_and_readme_section(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "profl", [0.2, 0.5, 0.6], need=8.0, plan_need=5.0)
    fake_run(out, "profl", [0.4, 0.5, 0.8], need=8.0, plan_need=5.0, seed=1)
    fake_run(out, "fedavg", [0.3, 0.4, 0.7], need=20.0, plan_need=20.0, cuda=[0.0, 30.5, 29.0])
    (out / "manifest.json").write_text(
        json.dumps({"commands": [["compare.py", "--methods", "profl,fedavg"]]})
    )
    table = report(out, ["profl", "fedavg"])
    assert [e["method"] for e in table] == ["profl", "fedavg"]
    assert table[0]["seeds"] == 2
    assert table[0]["peak_mb_est"] == 5.0  # the plan's need, not the step's plain need
    assert table[1]["best_accuracy"] == 0.7
    assert table[1]["tail_accuracy"] == 0.7  # evaluations after 75% of 3 rounds: round 3
    assert table[0]["peak_mb_cuda"] != table[0]["peak_mb_cuda"]  # NaN: no CUDA client reported
    assert table[1]["peak_mb_cuda"] == 30.5  # the largest a CUDA client reported
    plots = [name for name, _, _ in PLOTS]
    assert {"accuracy_compute.png", "accuracy_bytes.png", "memory.png"} <= set(plots)
    for name in ("table.md", "table.csv", "runs.csv", *plots):
        assert (out / name).stat().st_size > 0
        assert (out / name).read_bytes()[:4] == b"\x89PNG" or not name.endswith(".png")
    note = (out / "table.md").read_text()
    assert all(f"{name}:" in note for name in plots)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- compare:cmp -->\nold\n<!-- /compare:cmp -->\nend\n")
    assert update_readme(readme, out)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "python -m benchmarks.accuracy.compare --methods profl,fedavg" in text
    assert "| profl |" in text and all(f"(cmp/{name})" in text for name in plots)


def test_validation_columns_sit_next_to_test_and_old_runs_show_a_dash(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "profl", [0.2, 0.5, 0.6, 0.7], need=8.0, plan_need=5.0, vals=[0.3, 0.4, 0.5, 0.9])
    fake_run(out, "fedavg", [0.3, 0.4, 0.7, 0.8], need=20.0, plan_need=20.0)  # before the split
    rows = load_runs(out)
    table = by_method(rows, ["profl", "fedavg"])
    write_tables(out, rows, table)
    head, _, profl, fedavg = (out / "table.md").read_text().splitlines()[:4]
    assert "| final acc | final val acc | mean acc, last 25% of rounds | mean val acc," in head
    assert profl.startswith("| profl | 1 | 0.7000 | 0.9000 | 0.7000 | 0.9000 | 0.7000 |")
    assert fedavg.startswith("| fedavg | 1 | 0.8000 | - | 0.8000 | - | 0.8000 |")
    assert "val acc: the same on the server's validation split" in (out / "table.md").read_text()
    assert "final_val_accuracy" in (out / "runs.csv").read_text().splitlines()[0]
    # a folder of runs from before the split: the table it always had
    old = tmp_path / "old"
    fake_run(old, "fedavg", [0.3, 0.4, 0.7, 0.8], need=20.0, plan_need=20.0)
    rows = load_runs(old)
    write_tables(old, rows, by_method(rows, ["fedavg"]))
    written = (old / "table.md").read_text() + (old / "table.csv").read_text()
    assert "val acc" not in written and "val_accuracy" not in written


def test_band_over_seeds_interpolates_and_stops_where_a_seed_stops() -> None:
    # seed 0 evaluated at x 1, 3, 4; seed 1 at 2, 3 only: common x is [2, 3]
    grid, mean, lo, hi = band([[1, 3, 4], [2, 3]], [[0.1, 0.3, 0.9], [0.5, 0.7]])
    assert grid.tolist() == [2.0, 3.0]
    assert np.allclose(mean, [0.35, 0.5]) and np.allclose(lo, [0.2, 0.3])
    assert np.allclose(hi, [0.5, 0.7])


def test_cli_report_only(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "fedavg", [0.3, 0.4, 0.7], need=20.0, plan_need=20.0)
    assert main(["--report-only", "--out", str(out), "--methods", "fedavg"]) == 0
    assert (out / "accuracy_bytes.png").exists() and (out / "table.csv").exists()
    assert main(["--report-only", "--out", str(tmp_path / "empty")]) == 1


def test_curve_is_cumulative_up_to_each_evaluation() -> None:
    rounds = [
        {"round": 1, "aggregated": 2, "round_s": 1.5, "bytes_down": 2**20, "bytes_up": 2**20},
        {"round": 2, "aggregated": 3, "round_s": 2.0, "bytes_down": 2**21, "bytes_up": 0,
         "accuracy": 0.4},
    ]  # fmt: skip
    assert curve(rounds) == {
        "round": [2.0],
        "updates": [5.0],
        "seconds": [3.5],
        "mb": [4.0],
        "accuracy": [0.4],
    }


def test_table_names_runs_whose_commit_was_not_recorded(tmp_path: Path) -> None:
    """A folder merged from older queues: their manifests (manifests/*.json) predate the
    commit; the table says which runs have none."""
    out = tmp_path / "cmp"
    for seed in (0, 1):
        fake_run(out, "fedavg", [0.3, 0.4], need=20.0, plan_need=20.0, seed=seed)
    (out / "manifests").mkdir()
    (out / "manifests" / "queue.json").write_text(
        json.dumps({"runs": [{"method": "fedavg", "seed": 0, "status": "ok"}]})
    )
    (out / "manifest.json").write_text(
        json.dumps({"runs": [{"method": "fedavg", "seed": 1, "commit": "c" * 40, "dirty": False}]})
    )
    rows = load_runs(out)
    write_tables(out, rows, by_method(rows, ["fedavg"]))
    text = (out / "table.md").read_text()
    assert text.startswith("> **Runs from 2 code versions**: commit not recorded (fedavg-s0); ")
    assert "cccccccc" not in text and "ccccccc (fedavg-s1)" in text
