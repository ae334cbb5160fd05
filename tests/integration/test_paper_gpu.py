"""The GPU machine's prepared check, on a CPU box with a tiny model: it runs end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.accuracy import paper_gpu
from benchmarks.common.gpu_bundle import subset_cifar10


@pytest.mark.slow
def test_paper_gpu_script_runs_in_process_and_reports(data_dir: Path, tmp_path: Path) -> None:
    """Both methods train in-process (no Ray, no SuperLink), curves and peaks are written."""
    code = paper_gpu.main([
        "--preset", "laptop", "--methods", "profl,fedavg", "--nodes", "4", "--minutes", "5",
        "--data-dir", str(data_dir), "--out", str(tmp_path),
        "--extra-run-config", "num-server-rounds=2 width=0.25 data-subsample=0.05 "
        "eval-every=1 fraction-train=0.5 min-rounds-per-step=1 max-rounds-stage2=1",
        "--peaks", "cnn", "--peaks-batch", "8", "--peaks-width", "0.25",
    ])  # fmt: skip
    assert code == 0
    table = (tmp_path / "paper_gpu.md").read_text()
    assert (
        table.startswith("device: cpu") and "| profl | 2 |" in table and "| fedavg | 2 |" in table
    )
    with open(tmp_path / "curves.csv", newline="") as f:
        curve = list(csv.DictReader(f))
    fedavg = [float(r["accuracy"]) for r in curve if r["method"] == "fedavg"]
    assert len(fedavg) == 2 and fedavg[-1] > 0.2  # above chance (0.1) after two rounds
    assert "| cnn | 8 |" in (tmp_path / "peaks.md").read_text()


def test_the_cifar10_subset_keeps_the_layout_and_the_test_split(
    data_dir: Path, tmp_path: Path
) -> None:
    kept = subset_cifar10(data_dir / "cifar10-jpeg", tmp_path, per_class=3)
    with open(tmp_path / "train_index.csv", newline="") as f:
        train = list(csv.DictReader(f))
    assert kept == 30 + 10_000 and len(train) == 30
    assert sorted({r["label"] for r in train}) == [str(c) for c in range(10)]
