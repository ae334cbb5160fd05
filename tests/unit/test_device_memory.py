"""``memory-mb=auto`` reads the device: a cgroup limit first, else MemAvailable, with a margin."""

from pathlib import Path

import pytest

from profl_strategy.memory.device import (
    MARGIN_MIN_MB,
    DeviceMemoryError,
    auto_budget_mb,
    margin_mb,
)

MB = 2**20


def cgroup(root: Path, limit: str, used: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "memory.max").write_text(limit + "\n")
    (root / "memory.current").write_text(f"{used}\n")
    return root


def meminfo(path: Path, available_kb: int) -> Path:
    path.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kb} kB\n")
    return path


def test_a_cgroup_limit_wins_over_mem_available(tmp_path: Path) -> None:
    root = cgroup(tmp_path / "cg", str(2048 * MB), 512 * MB)
    mb, source = auto_budget_mb(False, root, meminfo(tmp_path / "meminfo", 8 * 2**20))
    free = 2048 - 512
    assert mb == pytest.approx(free - margin_mb(free))
    assert "cgroup limit 2048 MB" in source and "margin" in source


def test_without_a_limit_mem_available_is_taken(tmp_path: Path) -> None:
    root = cgroup(tmp_path / "cg", "max", 512 * MB)  # cgroup v2 without a limit
    mb, source = auto_budget_mb(False, root, meminfo(tmp_path / "meminfo", 1024 * 1024))
    assert mb == pytest.approx(1024 - margin_mb(1024)) and "MemAvailable" in source
    assert margin_mb(100) == MARGIN_MIN_MB and margin_mb(10_000) == pytest.approx(1000)


def test_nothing_readable_refuses_and_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(DeviceMemoryError, match="set memory-mb to a number of MB"):
        auto_budget_mb(False, tmp_path / "none", tmp_path / "no-meminfo")


def test_too_little_free_refuses(tmp_path: Path) -> None:
    root = cgroup(tmp_path / "cg", str(600 * MB), 560 * MB)
    with pytest.raises(DeviceMemoryError, match="only 40 MB free"):
        auto_budget_mb(False, root, tmp_path / "no-meminfo")
