"""``benchmarks.accuracy.compare --jobs 2``: two real runs at once, each on a CPU of its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.accuracy.compare import main


@pytest.mark.slow
@pytest.mark.simulation
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_two_runs_at_once_each_pinned_to_one_cpu(tmp_path: Path, data_dir: Path) -> None:
    """A real two-run comparison with ``--jobs 2``: both finish, on different CPUs, and
    the manifest records the comparison's wall time and the machine it ran on."""
    out = tmp_path / "cmp"
    argv = [
        "--preset", "fmnist_cpu", "--methods", "fedavg,allsmall", "--seeds", "0",
        "--engine", "inprocess", "--jobs", "2", "--num-supernodes", "6",
        "--data-dir", str(data_dir), "--out", str(out),
        "--extra-run-config", "num-server-rounds=2 data-subsample=0.1 eval-test-size=500",
    ]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    runs = {r["method"]: r for r in manifest["runs"]}
    assert {r["status"] for r in runs.values()} == {"ok"}
    assert runs["fedavg"]["core"] != runs["allsmall"]["core"]
    assert manifest["jobs"] == 2 and manifest["wall_seconds"] > 0
    assert manifest["commands"][-1][1:] == argv  # this command, not the test runner's
    assert manifest["machine"]["usable_cpus"] >= 2 and manifest["machine"]["torch"]
    for method in runs:
        log = (out / "runs" / f"{method}-s0" / "flwr.log").read_text()
        assert "Traceback" not in log
        assert (out / "table.md").exists()
