"""``benchmarks.accuracy.compare --jobs``: concurrent runs, each on a CPU of its own.

A real two-run comparison: ``tests/integration/test_pool_jobs.py``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from benchmarks.accuracy.compare import main
from benchmarks.common.machine import cpuinfo
from benchmarks.common.pool import pick_cores, run_pooled


def test_pick_cores_refuses_more_jobs_than_cpus() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert len(pick_cores(cpus)) == cpus
    with pytest.raises(ValueError, match=f"--jobs {cpus + 1} .*use --jobs {cpus} or fewer"):
        pick_cores(cpus + 1)
    with pytest.raises(ValueError, match="--jobs must be 1 or more"):
        pick_cores(0)


def test_concurrent_runs_never_share_a_core() -> None:
    """Every item runs once; two items that overlap in time hold different cores."""
    jobs = min(2, len(os.sched_getaffinity(0)))
    spans: list[tuple[int, float, float, int | None]] = []
    lock = threading.Lock()

    def work(item: int, core: int | None) -> None:
        start = time.monotonic()
        time.sleep(0.05)
        with lock:
            spans.append((item, start, time.monotonic(), core))

    run_pooled(list(range(7)), jobs, work)
    assert sorted(s[0] for s in spans) == list(range(7))
    for a in spans:
        for b in spans:
            if a is not b and a[1] < b[2] and b[1] < a[2]:
                assert a[3] != b[3]


def test_jobs_need_the_in_process_engine(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="needs --engine inprocess"):
        main(["--jobs", "2", "--methods", "fedavg", "--out", str(tmp_path)])


def test_cpuinfo_reads_the_first_processor_only() -> None:
    text = (
        "processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\n"
        "cpu MHz\t\t: 2596.140\nflags\t\t: fpu avx2\n\n"
        "processor\t: 1\nmodel name\t: other\ncpu MHz\t\t: 1.0\n"
    )
    assert cpuinfo(text) == {
        "model name": "AMD EPYC", "cpu family": "25", "model": "17", "cpu MHz": "2596.140",
    }  # fmt: skip
