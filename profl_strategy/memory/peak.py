"""Measured peak memory of one training call: the one definition the app, benchmarks and tests use.

On CUDA the figure is ``torch.cuda.max_memory_allocated`` since the call began.
On the CPU it is the process's resident high-water mark during the call minus
the process's *idle* resident size, taken once, before this process's first
training call (:func:`idle_rss_mb`). A long-lived process keeps the heap it
freed, so a per-call "before" would hide real growth; against the idle size,
whatever the call leaves resident (a cached data partition, the runtime's code
pages, oneDNN's caches) is counted on every call, as a device sees it.

The high-water mark is reset by writing ``5`` to ``/proc/self/clear_refs``
(Linux); where that is refused (no ``/proc``, a locked-down container) a
sampling thread reads the resident size every few milliseconds instead, and
the figure says so (``method``): it can miss a spike shorter than the interval.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import sys
import threading
from dataclasses import dataclass
from logging import WARNING
from pathlib import Path
from types import TracebackType

import torch
from flwr.common import log

MB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_SAMPLE_S = 0.002  # where the resident size itself is the measurement
_GUARD_S = 0.01  # where VmHWM holds the peak: the guard only checks it (measured: ~1-2% of a step)
_idle_mb: float | None = None
_clear_refs_ok: bool | None = None


def _status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None off Linux."""
    try:
        with _STATUS.open() as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Resident size of this process now, in MB (``ru_maxrss`` where ``/proc`` is missing)."""
    now = _status_mb("VmRSS")
    if now is not None:
        return now
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MB if sys.platform == "darwin" else maxrss / 1024


def idle_rss_mb(held_mb: float = 0.0) -> float:
    """This process's resident size before its first training call (taken on the first call).

    The ClientApp calls it when it loads and before each call, so the figure
    is the idle node: Python, torch, Flower and the app imported, nothing trained.
    ``held_mb`` is what the first call already holds when the figure is taken (the
    received arrays): it belongs to the call, so it is left out of the idle size.
    """
    global _idle_mb
    if _idle_mb is None:
        _idle_mb = rss_mb() - held_mb
    return _idle_mb


def glibc() -> ctypes.CDLL | None:
    """glibc, where the process runs on it (not a preloaded malloc), else None."""
    if allocator() != "glibc" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def trim_heap() -> None:
    """Return glibc's free heap pages to the OS (no-op elsewhere): a peak measured after
    it counts the pages the call touches, not free ones left resident before it."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def reset_hwm() -> bool:
    """Reset the resident high-water mark to the current size; False where refused."""
    global _clear_refs_ok
    if _clear_refs_ok is False:
        return False
    try:
        _CLEAR_REFS.write_text("5")
        _clear_refs_ok = _status_mb("VmHWM") is not None
    except OSError:
        _clear_refs_ok = False
    return _clear_refs_ok


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        log(WARNING, "%s", text)


def allocator() -> str:
    """The malloc the process runs on: a preloaded tcmalloc/jemalloc, else glibc's."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in preload:
            return name
    return "glibc" if sys.platform.startswith("linux") else sys.platform


@dataclass(frozen=True)
class Measurement:
    """A measured peak, how it was taken, and the conditions it depends on."""

    peak_mb: float
    method: str
    threads: int
    allocator: str

    def describe(self) -> str:
        """One line for logs."""
        return f"{self.peak_mb:.1f} MB ({self.method}, {self.threads} threads, {self.allocator})"


class PeakMeter:
    """Measure a call's peak on ``device``; optionally watch it against a limit.

    ``shared_less_mb`` is for a process that hosts many nodes (a simulation's Ray
    actor, the in-process engine): no node has an idle size of its own there, so the
    call is counted from the resident size at its start, taken after the free heap is
    trimmed, less ``shared_less_mb`` (what the call already holds: its received
    arrays). With ``limit_mb`` a thread samples
    the resident size (CPU) during the call and sets :attr:`tripped` once the
    call's peak passes the limit, so the call can stop itself
    (:func:`~profl_strategy.memory.guard.budget_guard`) before the OS kills it.

    Examples
    --------
    >>> with PeakMeter(torch.device("cpu")) as meter:  # doctest: +SKIP
    ...     train()
    >>> meter.result.peak_mb  # doctest: +SKIP
    """

    def __init__(
        self,
        device: torch.device,
        limit_mb: float | None = None,
        shared_less_mb: float | None = None,
    ) -> None:
        self.device = device
        self.limit_mb = limit_mb
        self.shared_less_mb = shared_less_mb
        self.baseline_mb: float | None = None
        self.tripped = threading.Event()
        self._stop = threading.Event()
        self._sampled = 0.0
        self._thread: threading.Thread | None = None
        self._method = ""
        self.result: Measurement | None = None

    def current_mb(self) -> float:
        """The call's peak so far, over the idle process (CPU) or on the device (CUDA)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MB
        base = idle_rss_mb() if self.baseline_mb is None else self.baseline_mb
        if self._method == "VmHWM":
            hwm = _status_mb("VmHWM") or 0.0
            return max(hwm, self._sampled) - base
        return max(self._sampled, rss_mb()) - base

    def __enter__(self) -> PeakMeter:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._method = "cuda max_memory_allocated"
        else:
            idle_rss_mb()
            trim_heap()
            if self.shared_less_mb is not None:
                self.baseline_mb = rss_mb() - self.shared_less_mb
            if reset_hwm():
                self._method = "VmHWM"
            else:
                self._method = f"RSS sampled every {_SAMPLE_S * 1e3:g} ms"
                _warn_once(
                    "/proc/self/clear_refs refused: peaks are the resident size sampled every "
                    f"{_SAMPLE_S * 1e3:g} ms, which can miss a shorter spike"
                )
        if self.device.type != "cuda" and (self._method != "VmHWM" or self.limit_mb is not None):
            self._thread = threading.Thread(target=self._sample, name="peak-meter", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        hwm = self._method == "VmHWM"  # the kernel keeps the peak: only check it
        while not self._stop.wait(_GUARD_S if hwm else _SAMPLE_S):
            if not hwm:
                self._sampled = max(self._sampled, rss_mb())
            if self.limit_mb is not None and self.current_mb() > self.limit_mb:
                self.tripped.set()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._sampled = max(self._sampled, rss_mb()) if self._method != "VmHWM" else 0.0
        self.result = Measurement(
            peak_mb=max(0.0, self.current_mb()),
            method=self._method,
            threads=torch.get_num_threads(),
            allocator="cuda caching" if self.device.type == "cuda" else allocator(),
        )
