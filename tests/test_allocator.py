"""``benchmarks.accuracy.compare --allocator``: which malloc the runs get, and that it changes
no result."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.accuracy.compare import main
from benchmarks.accuracy.run_files import read_results, results_paths
from benchmarks.accuracy.same_runs import outcome
from benchmarks.speed import allocator

TCMALLOC = allocator.find("tcmalloc")


def installed(monkeypatch: pytest.MonkeyPatch, libs: dict[str, str]) -> None:
    """Pretend only ``libs`` (find_library name -> file) are installed."""
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: libs.get(name))


def test_auto_takes_the_first_installed_else_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, {"jemalloc": "libjemalloc.so.2"})
    assert allocator.resolve("auto") == ("jemalloc", "libjemalloc.so.2")
    installed(monkeypatch, {"jemalloc": "libjemalloc.so.2", "tcmalloc_minimal": "libtc.so.4"})
    assert allocator.resolve("auto") == ("tcmalloc", "libtc.so.4")
    installed(monkeypatch, {})
    assert allocator.resolve("auto") == ("system", None)
    assert allocator.resolve("system") == ("system", None)
    assert allocator.preload_env(None) == {}


def test_a_named_allocator_that_is_missing_stops_with_its_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, {})
    with pytest.raises(SystemExit, match="apt install libtcmalloc-minimal4"):
        allocator.resolve("tcmalloc")
    with pytest.raises(SystemExit, match="'mimalloc' is not one of auto, system, tcmalloc"):
        allocator.resolve("mimalloc")


def test_preload_goes_in_front_of_an_existing_preload() -> None:
    env = allocator.preload_env("libtc.so.4", {"LD_PRELOAD": "libother.so"})
    assert env == {"LD_PRELOAD": "libtc.so.4 libother.so"}
    assert allocator.preload_env("libtc.so.4", {}) == {"LD_PRELOAD": "libtc.so.4"}


@pytest.mark.skipif(TCMALLOC is None, reason="tcmalloc is not installed")
def test_a_child_process_runs_on_the_preloaded_library() -> None:
    env = allocator.preload_env(TCMALLOC, {})
    maps = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/maps').read())"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "tcmalloc" in maps


def run_outcome(out: Path) -> tuple[list, dict]:
    """What the one run under ``out`` computed (every number but its time)."""
    (path,) = results_paths(out)
    return outcome(read_results(path))


@pytest.mark.simulation
@pytest.mark.skipif(TCMALLOC is None, reason="tcmalloc is not installed")
def test_tcmalloc_changes_no_number_a_run_reports(tmp_path: Path, data_dir: Path) -> None:
    """The same run under glibc's malloc and under tcmalloc: every round's accuracy,
    loss, bytes and training loss and the summary are equal; the manifest says which."""
    found = {}
    for choice in ("system", "tcmalloc"):
        out = tmp_path / choice
        argv = [
            "--preset", "fmnist_cpu", "--methods", "fedavg", "--seeds", "0",
            "--engine", "inprocess", "--num-supernodes", "6", "--allocator", choice,
            "--data-dir", str(data_dir), "--out", str(out),
            "--extra-run-config", "num-server-rounds=3 data-subsample=0.1 eval-test-size=500",
        ]  # fmt: skip
        assert main(argv) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["allocator"] == choice
        assert ("LD_PRELOAD" in manifest["env"]) == (choice != "system")
        found[choice] = run_outcome(out)
    assert found["system"] == found["tcmalloc"]
    assert found["system"][0][-1]["train_loss"] > 0
