"""``memory-mb=auto``: the training budget a device can give, read from the device.

Read inside the ClientApp, whose idle size is by then already in use (so it is
not subtracted twice): on CUDA, the free device memory; elsewhere the memory
this process's cgroup may still take (``memory.max - memory.current``, v2, or
the v1 pair) where a limit is set, else the kernel's ``MemAvailable``. A margin
of :data:`MARGIN_SHARE` of that figure, at least :data:`MARGIN_MIN_MB`, is
left for the operating system, the SuperNode and the spikes a sample misses.
"""

from __future__ import annotations

from pathlib import Path

import torch

MB = 2**20
MARGIN_SHARE = 0.10
MARGIN_MIN_MB = 64.0
_CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 2**60


class DeviceMemoryError(RuntimeError):
    """Nothing on this device says how much memory training may use."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return _UNLIMITED if text == "max" else int(text) if text.isdigit() else None


def cgroup_free_mb(root: Path = _CGROUP) -> tuple[float, str] | None:
    """Memory the cgroup may still take, if it has a limit (v2, then v1)."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(root / limit_file), _read_int(root / usage_file)
        if limit is not None and usage is not None and limit < _UNLIMITED // 2:
            return (limit - usage) / MB, f"cgroup limit {limit / MB:.0f} MB, {usage / MB:.0f} used"
    return None


def mem_available_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """The kernel's ``MemAvailable`` in MB, or None where there is no such file."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def margin_mb(free_mb: float) -> float:
    """What ``auto`` leaves unused of ``free_mb``."""
    return max(MARGIN_MIN_MB, MARGIN_SHARE * free_mb)


def auto_budget_mb(
    cuda: bool | None = None, cgroup: Path = _CGROUP, meminfo: Path = Path("/proc/meminfo")
) -> tuple[float, str]:
    """The budget ``memory-mb=auto`` gives, and where it came from (for logs).

    Raises
    ------
    DeviceMemoryError
        If nothing can be read, or what is free does not cover the margin.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        free = torch.cuda.mem_get_info()[0] / MB
        found: tuple[float, str] | None = (free, "free CUDA memory")
    else:
        found = cgroup_free_mb(cgroup)
        if found is None:
            available = mem_available_mb(meminfo)
            found = None if available is None else (available, "MemAvailable")
    if found is None:
        raise DeviceMemoryError(
            "memory-mb=auto: this device shows no cgroup limit, no /proc/meminfo and no CUDA "
            "device, so its free memory cannot be read; set memory-mb to a number of MB instead, "
            'e.g. --node-config "memory-mb=600 ..."'
        )
    free, where = found
    budget = free - margin_mb(free)
    if budget <= 0:
        raise DeviceMemoryError(
            f"memory-mb=auto: only {free:.0f} MB free ({where}), less than the "
            f"{margin_mb(free):.0f} MB margin; free memory on the device or set memory-mb"
        )
    return budget, f"auto: {where}, {free:.0f} MB free - {margin_mb(free):.0f} MB margin"
