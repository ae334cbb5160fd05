"""Per-node memory budgets: from ``--node-config`` in deployment, from a profile in simulation.

Simulation cannot give each SuperNode its own config, so a node's budget is
derived from its ``partition-id`` and the run seed. Shares are allocated exactly
(largest remainder) and then shuffled with the seed, so a profile with a 6% tier
gives exactly ``round(0.06 * N)`` such nodes, and the same seed gives the same
node the same budget on every run and every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

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


def node_budget_mb(
    node_config: dict,
    profile: MemoryProfile,
    full_peak_mb: float,
    seed: int,
) -> tuple[float, str]:
    """A node's memory budget in MB and where it came from.

    A ``memory-mb`` entry in the node's config (deployment) wins; otherwise the
    budget follows from the profile, ``partition-id`` and ``num-partitions``.
    """
    if "memory-mb" in node_config:
        mb = float(node_config["memory-mb"])
        if mb <= 0:
            raise ValueError(f"node-config memory-mb must be > 0, got {mb}")
        return mb, "node-config"
    pid = int(node_config["partition-id"])
    n = int(node_config["num-partitions"])
    tier = tier_of(pid, n, profile.shares, seed)
    name = profile.tiers[tier] if profile.tiers else str(tier)
    return profile.budget_mb(profile.levels[tier], full_peak_mb), f"{profile.name}:{name}"
