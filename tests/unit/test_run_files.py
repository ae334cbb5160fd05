"""benchmarks.accuracy.run_files: packed runs report exactly as the files they were packed from."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.accuracy import report, run_files


def _run(folder: Path, method: str, seed: int, acc: float) -> Path:
    run = folder / "runs" / f"{method}-s{seed}" / f"{method}-run"
    run.mkdir(parents=True)
    rounds = [{"round": r, "accuracy": acc * r / 8, "round_s": 1.0} for r in range(1, 9)]
    data = {"rounds": rounds, "summary": {"final_accuracy": acc, "rounds": 8}, "wall_s": 9.0}
    (run / "results.json").write_text(json.dumps(data))
    (run.parent / "flwr.log").write_text("round 1\n" * 100)
    return run


def test_packed_runs_read_as_before(tmp_path: Path) -> None:
    out, linked = tmp_path / "cmp", tmp_path / "other"
    _run(out, "profl", 0, 0.6)
    _run(out, "fedavg", 1, 0.5)
    other = _run(linked, "allsmall", 2, 0.3)
    (out / "runs" / "allsmall-s2").symlink_to(other.parent)
    before = report.load_runs(out)
    assert [(r["method"], r["seed"]) for r in before] == [
        ("allsmall", 2),
        ("fedavg", 1),
        ("profl", 0),
    ]

    size, packed = run_files.pack(out)
    assert 0 < packed < size
    for run in ("profl-s0", "fedavg-s1"):  # replaced by their .gz
        assert not list((out / "runs" / run).glob("*/results.json"))
        assert not (out / "runs" / run / "flwr.log").exists()
    assert (other / "results.json").exists()  # a linked run belongs to its own folder
    assert json.dumps(report.load_runs(out)) == json.dumps(before)  # NaN-safe

    run_files.pack(linked)
    assert json.dumps(report.load_runs(out)) == json.dumps(before)
    plain = out / "runs" / "profl-s0" / "profl-run" / "results.json"
    assert run_files.read_results(plain)["summary"]["final_accuracy"] == 0.6


def test_packing_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    gz = [_run(f, "profl", 0, 0.6) / "results.json.gz" for f in (one, two)]
    run_files.pack(one)
    run_files.pack(two)
    assert gz[0].read_bytes() == gz[1].read_bytes()
