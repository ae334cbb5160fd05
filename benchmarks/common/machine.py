"""What a benchmark's wall times were measured on.

The same comparison has run 1.4-1.5x slower on one session's 2-core machine than on
another's (README, CIFAR-10 at 550 rounds), and a VM's CPU name alone ("AMD EPYC")
does not tell the two apart. Every ``manifest.json`` therefore records the CPU's
family, model and clock, the CPUs the comparison could use, and the torch build,
read without importing torch (the comparison's parent process stays light).
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CPUINFO_KEYS = ("model name", "cpu family", "model", "stepping", "cpu MHz")


def cpuinfo(text: str) -> dict[str, str]:
    """The first processor's :data:`CPUINFO_KEYS` from the text of ``/proc/cpuinfo``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends at its first blank line
        key, _, value = line.partition(":")
        if key.strip() in CPUINFO_KEYS:
            found[key.strip()] = value.strip()
    return found


def machine_facts() -> dict[str, object]:
    """CPU, usable CPUs, Python and torch version of this machine (JSON-ready)."""
    path = Path("/proc/cpuinfo")
    cpu = cpuinfo(path.read_text()) if path.exists() else {"model name": platform.processor()}
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return {
        "cpu": cpu,
        "usable_cpus": usable,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch_version,
    }
