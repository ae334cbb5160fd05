"""Run a comparison's runs several at a time, each on a CPU of its own.

Two CPU-heavy runs that share cores slow each other 5-10x (torch threads contend), so
``--jobs N`` gives each of N concurrent runs one CPU of this process's affinity mask and
one torch thread. That is how the README's 2-core comparisons ran (one run per core).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def pick_cores(jobs: int) -> list[int | None]:
    """One CPU per concurrent run (``None``: not pinned, for a lone run, which may use
    every CPU, and where the OS cannot pin a process)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be 1 or more, got {jobs}")
    if jobs == 1 or not hasattr(os, "sched_getaffinity"):
        return [None] * jobs
    cores = sorted(os.sched_getaffinity(0))
    if jobs > len(cores):
        raise ValueError(
            f"--jobs {jobs} asks for more concurrent runs than the {len(cores)} CPUs this "
            f"process may use ({cores}); use --jobs {len(cores)} or fewer"
        )
    return list(cores[:jobs])


def pin(pid: int, core: int | None) -> None:
    """Keep process ``pid`` (and the threads it starts from now on) on ``core``."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {core})


def run_pooled(items: Sequence[T], jobs: int, work: Callable[[T, int | None], None]) -> None:
    """Call ``work(item, core)`` for every item, ``jobs`` at a time, in the given order.

    Each call holds one core until it returns, so no two concurrent calls share one;
    list the longest runs first for the shortest total time.
    """
    free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for core in pick_cores(jobs):
        free.put(core)

    def hold_a_core(item: T) -> None:
        core = free.get()
        try:
            work(item, core)
        finally:
            free.put(core)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(hold_a_core, item) for item in items]:
            future.result()
