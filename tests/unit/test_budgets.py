"""Per-node budgets: deterministic, exact shares, node-config wins, bad node-configs named.

The strategy asking nodes for their budgets: ``tests/integration/test_budget_discovery.py``.
"""

from collections import Counter

import pytest

from profl_strategy.engine.budgets import (
    MemoryProfile,
    NodeConfigError,
    node_budget_mb,
    tier_counts,
)
from tests.support.strategies import profile, profl


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
    node = {"memory-mb": 512, "partition-id": 0, "num-partitions": 1}
    mb, source = node_budget_mb(node, profile("uniform"), 1.0, 0)
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


# ---- bad node-configs are refused by name, and the run goes on without the node -------
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        ("lots", "'lots'"),
        (-1, "-1"),
        (0, "0"),
        (True, "true"),
    ],
)
def test_bad_memory_mb_is_refused_by_key_value_and_node(value: object, shown: str) -> None:
    node = {"partition-id": 0, "num-partitions": 3, "memory-mb": value}
    with pytest.raises(NodeConfigError) as err:
        node_budget_mb(node, profile("uniform"), 100.0, 0, node_id=4242)
    message = str(err.value)
    assert f"SuperNode 4242: node-config memory-mb={shown} is not allowed" in message
    assert "finite number of MB > 0" in message  # what is allowed
    assert "--node-config" in message  # what to do


def test_memory_mb_may_be_a_number_in_quotes() -> None:
    node = {"partition-id": 0, "num-partitions": 3, "memory-mb": "9.5"}
    assert node_budget_mb(node, profile("uniform"), 100.0, 0)[0] == 9.5


@pytest.mark.parametrize(
    ("node", "key", "shown", "allowed"),
    [
        ({"partition-id": 1.5, "num-partitions": 3}, "partition-id", "1.5", "0 to num-partitions"),
        ({"partition-id": -1, "num-partitions": 3}, "partition-id", "-1", "0 to num-partitions"),
        ({"partition-id": 3, "num-partitions": 3}, "partition-id", "3", "num-partitions - 1 = 2"),
        ({"partition-id": "a", "num-partitions": 3}, "partition-id", "'a'", "whole number"),
        ({"partition-id": 0, "num-partitions": 0}, "num-partitions", "0", "whole number >= 1"),
        ({"partition-id": 0, "num-partitions": 2.5}, "num-partitions", "2.5", "whole number >= 1"),
    ],
)
def test_bad_partitions_are_refused_by_key_value_and_node(
    node: dict, key: str, shown: str, allowed: str
) -> None:
    with pytest.raises(NodeConfigError) as err:
        node_budget_mb({**node, "memory-mb": 600}, profile("uniform"), 100.0, 0, node_id=7)
    message = str(err.value)
    assert f"SuperNode 7: node-config {key}={shown} is not allowed" in message
    assert allowed in message


def test_a_node_without_partition_is_refused() -> None:
    with pytest.raises(NodeConfigError, match="SuperNode 7: node-config has no num-partitions"):
        node_budget_mb({"partition-id": 0, "memory-mb": 600}, profile("uniform"), 1.0, 0, 7)


def test_budget_summary_keeps_decimals_and_counts_repeats() -> None:
    s = profl()
    s.nodes.budgets = {1: 20.0, 2: 3.0, 3: 9.5, 4: 6.0}
    assert s.nodes.summary() == "4 online nodes: 3, 6, 9.5, 20 MB"
    s.nodes.budgets = {1: 7.25, 2: 7.25, 3: 1234.567, 4: 0.004}
    assert s.nodes.summary() == "4 online nodes: 0.004, 7.25 (x2), 1234.57 MB"
