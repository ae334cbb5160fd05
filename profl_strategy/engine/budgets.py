"""Per-node memory budgets: from ``--node-config`` in deployment, from a profile in simulation.

Simulation cannot give each SuperNode its own config, so a node's budget is
derived from its ``partition-id`` and the run seed. Shares are allocated exactly
(largest remainder) and then shuffled with the seed, so a profile with a 6% tier
gives exactly ``round(0.06 * N)`` such nodes, and the same seed gives the same
node the same budget on every run and every machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("uniform-tiers", "fedrolex-skewed", "phone-ram")
UNITS = ("relative", "ram-gb")


@dataclass(frozen=True)
class MemoryProfile:
    """A mix of device classes.

    ``levels`` are capacities relative to full-model training memory when
    ``unit == "relative"``, or device RAM in GB when ``unit == "ram-gb"``. RAM is
    not a training budget: only ``usable_fraction`` of it is. With
    ``scale_to_model`` a device of ``full_ram_gb`` RAM gets exactly the memory
    full-model training needs, so the mix keeps its meaning for any model size.
    """

    name: str
    shares: tuple[float, ...]
    levels: tuple[float, ...]
    unit: str = "relative"
    usable_fraction: float = 1.0
    scale_to_model: bool = True
    full_ram_gb: float = 6.0
    scale: float = 1.0
    tiers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("shares", "levels", "tiers"):  # YAML and records give lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.shares) != len(self.levels) or not self.shares:
            raise ValueError(
                f"memory profile '{self.name}': shares ({len(self.shares)}) and "
                f"levels ({len(self.levels)}) must be non-empty and of equal length"
            )
        if any(s < 0 for s in self.shares) or sum(self.shares) <= 0:
            raise ValueError(f"memory profile '{self.name}': shares must be >= 0")
        if any(v <= 0 for v in self.levels):
            raise ValueError(f"memory profile '{self.name}': levels must be > 0")
        if self.unit not in UNITS:
            raise ValueError(f"memory unit '{self.unit}' is not one of {UNITS}")

    def budget_mb(self, level: float, full_peak_mb: float) -> float:
        """Budget of a device of one level, in MB."""
        if self.unit == "relative":
            return level * full_peak_mb * self.scale
        if self.scale_to_model:
            return level / self.full_ram_gb * full_peak_mb * self.scale
        return level * 1024 * self.usable_fraction * self.scale


def tier_counts(shares: tuple[float, ...], n: int) -> list[int]:
    """Split ``n`` nodes by ``shares`` exactly, by largest remainder."""
    total = sum(shares)
    raw = [s / total * n for s in shares]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def tier_of(partition_id: int, num_partitions: int, shares: tuple[float, ...], seed: int) -> int:
    """Tier index of a partition, fixed by the seed."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    tiers = [i for i, c in enumerate(tier_counts(shares, num_partitions)) for _ in range(c)]
    random.Random(f"profl-budgets-{seed}").shuffle(tiers)
    return tiers[partition_id]


class NodeConfigError(ValueError):
    """A SuperNode's ``--node-config`` holds a value this app cannot use.

    The message names the node, the key, the value and what is allowed, so the
    strategy can log it as it is and leave the node out of the run.
    """


_FIX = (
    "Restart this SuperNode with a corrected --node-config; until then the run goes on without it."
)


def _shown(value: Any) -> str:
    """A node-config value as it is written in ``--node-config`` (TOML)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _refuse(node: str, key: str, value: Any, allowed: str) -> NodeConfigError:
    return NodeConfigError(
        f"SuperNode {node}: node-config {key}={_shown(value)} is not allowed; {allowed}. {_FIX}"
    )


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a number (or a string of one), else None. Never a bool."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def memory_mb_of(node_config: dict, node: str = "?") -> float:
    """The ``memory-mb`` of a node's config, refused unless a finite number > 0.

    A NaN budget would never refuse a step and an infinite one would take every
    step, so both are as wrong as a negative one.
    """
    value = node_config["memory-mb"]
    mb = _number(value)
    if mb is None or not math.isfinite(mb) or mb <= 0:
        raise _refuse(
            node,
            "memory-mb",
            value,
            "memory-mb must be a finite number of MB > 0, e.g. memory-mb=600",
        )
    return mb


def _whole(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (3, 3.0, "3"), else None."""
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def partition_of(node_config: dict, node: str = "?") -> tuple[int, int]:
    """``(partition-id, num-partitions)`` of a node, refused unless ``0 <= id < num``.

    Every node needs both: the ClientApp trains on that partition of the data.
    """
    example = 'e.g. --node-config "partition-id=0 num-partitions=3 memory-mb=600"'
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise NodeConfigError(
                f"SuperNode {node}: node-config has no {key}; every node needs partition-id and "
                f"num-partitions, whole numbers with 0 <= partition-id < num-partitions, "
                f"{example}. {_FIX}"
            )
    n = _whole(node_config["num-partitions"])
    if n is None or n < 1:
        raise _refuse(
            node,
            "num-partitions",
            node_config["num-partitions"],
            "num-partitions must be a whole number >= 1",
        )
    pid = _whole(node_config["partition-id"])
    if pid is None or not 0 <= pid < n:
        raise _refuse(
            node,
            "partition-id",
            node_config["partition-id"],
            f"partition-id must be a whole number from 0 to num-partitions - 1 = {n - 1}",
        )
    return pid, n


def node_budget_mb(
    node_config: dict,
    profile: MemoryProfile,
    full_peak_mb: float,
    seed: int,
    node_id: int | str = "?",
) -> tuple[float, str]:
    """A node's memory budget in MB and where it came from.

    A ``memory-mb`` entry in the node's config (deployment) wins; otherwise the
    budget follows from the profile, ``partition-id`` and ``num-partitions``.
    Raises :class:`NodeConfigError`, naming ``node_id``, for a value the run
    cannot use.
    """
    node = str(node_id)
    pid, n = partition_of(node_config, node)
    if "memory-mb" in node_config:
        return memory_mb_of(node_config, node), "node-config"
    tier = tier_of(pid, n, profile.shares, seed)
    name = profile.tiers[tier] if profile.tiers else str(tier)
    return profile.budget_mb(profile.levels[tier], full_peak_mb), f"{profile.name}:{name}"
