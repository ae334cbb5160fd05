"""Pruning the partition cache: old partitions go, recently used ones and partial writes stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from profl_strategy.task import partition_cache as pc

DAY = 86400.0


def cache(folder: Path, stem: str, age_days: float) -> pc.CacheFiles:
    files = (folder / f"{stem}-images.npy", folder / f"{stem}-labels.npy")
    pc.save_partition(files, np.zeros((2, 4, 4, 1), np.uint8), np.arange(2, dtype=np.int64))
    then = time.time() - age_days * DAY
    for path in files:
        os.utime(path, (then, then))
    return files


def test_prune_deletes_only_partitions_unused_for_longer(tmp_path: Path) -> None:
    old = cache(tmp_path, "old", 40)
    new = cache(tmp_path, "new", 1)
    writing = tmp_path / "x-images.npy1234.tmp"  # a write in progress (_save_atomic)
    writing.write_bytes(b"partial")
    old_bytes = sum(p.stat().st_size for p in old)
    assert pc.prune_partitions(30, tmp_path) == (2, old_bytes)
    assert not any(p.exists() for p in old) and all(p.exists() for p in new)
    assert writing.exists()
    assert pc.prune_partitions(0, tmp_path)[0] == 2
    assert pc.cached_partitions(tmp_path) == []
    with pytest.raises(ValueError, match="older_than_days must be >= 0, got -1"):
        pc.prune_partitions(-1, tmp_path)


def test_a_read_counts_as_a_use(tmp_path: Path) -> None:
    files = cache(tmp_path, "used", 40)
    assert pc.read_partition(files, (4, 4, 1)) is not None
    assert pc.prune_partitions(30, tmp_path) == (0, 0)


def test_cli_prunes_the_configured_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROFL_CACHE_DIR", str(tmp_path))
    cache(tmp_path / "partitions", "old", 40)
    cache(tmp_path / "partitions", "new", 1)
    pc.main(["--prune", "30"])
    out = capsys.readouterr().out
    assert "deleted 2 files" in out and "1 partitions" in out
