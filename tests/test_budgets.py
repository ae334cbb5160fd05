"""Per-node budgets: deterministic, exact shares, node-config wins."""

from collections import Counter

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from profl_strategy.budgets import MemoryProfile, node_budget_mb, tier_counts
from profl_strategy.config import CONF_DIR


def profile(name: str) -> MemoryProfile:
    return instantiate(OmegaConf.load(CONF_DIR / "memory" / f"{name}.yaml"), _convert_="all")


def budgets(p: MemoryProfile, n: int, seed: int) -> list[float]:
    return [
        node_budget_mb({"partition-id": i, "num-partitions": n}, p, 100.0, seed)[0]
        for i in range(n)
    ]


def test_tier_counts_are_exact() -> None:
    assert tier_counts((6, 10, 11, 18, 55), 100) == [6, 10, 11, 18, 55]
    assert sum(tier_counts((6, 10, 11, 18, 55), 20)) == 20


def test_budgets_are_deterministic_per_seed() -> None:
    p = profile("fedrolex")
    assert budgets(p, 20, seed=3) == budgets(p, 20, seed=3)
    assert budgets(p, 20, seed=3) != budgets(p, 20, seed=4)
    assert Counter(budgets(p, 20, 3)) == Counter(budgets(p, 20, 4))  # same mix, other nodes


def test_minority_fits_the_full_model_by_default() -> None:
    for name in ("fedrolex", "uniform", "phone"):
        b = budgets(profile(name), 100, seed=0)
        fits = sum(x >= 100.0 for x in b)
        assert 0 < fits < 50, name


def test_node_config_memory_wins() -> None:
    mb, source = node_budget_mb({"memory-mb": 512, "partition-id": 0}, profile("uniform"), 1.0, 0)
    assert (mb, source) == (512.0, "node-config")


def test_phone_profile_without_scaling_uses_usable_ram() -> None:
    p = MemoryProfile("p", (1,), (4.0,), unit="ram-gb", usable_fraction=0.1, scale_to_model=False)
    assert node_budget_mb({"partition-id": 0, "num-partitions": 1}, p, 1.0, 0)[0] == pytest.approx(
        409.6
    )


def test_bad_profiles_and_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="equal length"):
        MemoryProfile("x", (1, 2), (1.0,))
    with pytest.raises(ValueError, match="partition-id"):
        node_budget_mb({"partition-id": 5, "num-partitions": 5}, profile("uniform"), 1.0, 0)
