"""Per-node budgets: deterministic, exact shares, node-config wins, bad node-configs named."""

from collections import Counter
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from hydra.utils import instantiate
from omegaconf import OmegaConf

from profl_strategy.engine.budgets import (
    MemoryProfile,
    NodeConfigError,
    node_budget_mb,
    tier_counts,
)
from profl_strategy.engine.nodes import REASK_LEFT_OUT_ROUNDS
from profl_strategy.engine.protocol import QUERY_BUDGET, DataSpec, RunSpec, TrainSpec
from profl_strategy.methods.profl.movement import ConvergenceDetector
from profl_strategy.methods.profl.schedule import ProgressiveSchedule
from profl_strategy.methods.profl.strategy import ProFL
from profl_strategy.run.config import CONF_DIR
from profl_strategy.task.model_key import ModelKey
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid


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


def query_run() -> RunSpec:
    """What a budget query carries, for the in-process nodes."""
    cnn = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1)
    return RunSpec(
        model=cnn,
        data=DataSpec("fmnist", "", "iid", 0.5, 2),
        train=TrainSpec(batch_size=8, local_epochs=1, lr=0.01, momentum=0.9, weight_decay=0.0),
        memory=profile("uniform"),
        full_peak_mb=100.0,
        seed=0,
    )


def profl() -> ProFL:
    """A ProFL strategy as run_profl builds it, without a run."""
    run = query_run()
    return ProFL(
        run=run,
        schedule=ProgressiveSchedule(run.model.spec().num_blocks, 1, 1, 1),
        detector=ConvergenceDetector(2, 0.5, 1),
        fraction_train=1.0,
        min_train_nodes=1,
        seed=0,
    )


def test_budget_summary_keeps_decimals_and_counts_repeats() -> None:
    s = profl()
    s.nodes.budgets = {1: 20.0, 2: 3.0, 3: 9.5, 4: 6.0}
    assert s.nodes.summary() == "4 online nodes: 3, 6, 9.5, 20 MB"
    s.nodes.budgets = {1: 7.25, 2: 7.25, 3: 1234.567, 4: 0.004}
    assert s.nodes.summary() == "4 online nodes: 0.004, 7.25 (x2), 1234.57 MB"


class CountingGrid(InProcessGrid):
    """An in-process grid that counts budget queries; ``offline`` nodes are hidden."""

    def __init__(self, node_configs: list[dict]) -> None:
        super().__init__(node_configs)
        self.queries: Counter[int] = Counter()
        self.offline: set[int] = set()
        self.silent: set[int] = set()  # nodes whose replies never arrive

    def get_node_ids(self) -> list[int]:
        return [n for n in self.contexts if n not in self.offline]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        messages = list(messages)
        for m in messages:
            if m.metadata.message_type == QUERY_BUDGET:
                self.queries[m.metadata.dst_node_id] += 1
        replies = super().send_and_receive(messages, timeout=timeout)
        return [r for r in replies if r.metadata.src_node_id not in self.silent]


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    # These nodes have no data (the budget bookkeeping is under test): no data term, and
    # budgets read as typed. tests/test_client.py covers the node's data and runtime terms.
    monkeypatch.setattr("client_app.node.call_overhead_mb", lambda *args: 0.0)


def left_out_lines(caplog: pytest.LogCaptureFixture, node: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"node {node} is left out" in r.getMessage()]


def test_bad_node_is_logged_once_asked_rarely_and_rejoins_when_fixed(
    caplog: pytest.LogCaptureFixture, task_identity: None
) -> None:
    nodes = [
        {"partition-id": i, "num-partitions": 3, "memory-mb": mb} for i, mb in enumerate((3, 9.5))
    ]
    grid = CountingGrid(
        [*nodes, {"partition-id": 2, "num-partitions": 3, "memory-mb": float("nan")}]
    )
    s = profl()
    for rnd in range(REASK_LEFT_OUT_ROUNDS + 2):
        s.discover(grid, rnd, timeout=10)
    assert sorted(s.budgets) == [1, 2] and 3 in s.nodes.left_out
    assert grid.queries == {1: 1, 2: 1, 3: 2}  # the bad node: first round and once after 10
    lines = left_out_lines(caplog, 3)
    assert len(lines) == 1, lines  # logged once, not at every question
    assert "SuperNode 3: node-config memory-mb=nan is not allowed" in lines[0]
    assert "2 online nodes: 3, 9.5 MB; 1 left out (no usable budget)" in caplog.text

    # The node restarts with a fixed config: it is asked at once when it reconnects.
    grid.offline.add(3)
    s.discover(grid, 12, timeout=10)
    grid.contexts[3].node_config["memory-mb"] = 20
    grid.offline.clear()
    s.discover(grid, 13, timeout=10)
    assert grid.queries[3] == 3 and s.budgets[3] == 20.0 and 3 not in s.nodes.left_out
    assert "node 3 now states a usable budget and joins the run" in caplog.text


def test_a_left_out_node_that_stops_answering_is_not_asked_every_round(
    task_identity: None,
) -> None:
    bad = {"partition-id": 1, "num-partitions": 2, "memory-mb": -1}
    grid = CountingGrid([{"partition-id": 0, "num-partitions": 2, "memory-mb": 5}, bad])
    s = profl()
    s.discover(grid, 0, timeout=10)
    grid.silent.add(2)  # asked again in round 10, it does not answer
    for rnd in range(1, 2 * REASK_LEFT_OUT_ROUNDS + 1):
        s.discover(grid, rnd, timeout=10)
    assert grid.queries[2] == 3  # rounds 0, 10 and 20, not every round after 10
    assert sorted(s.budgets) == [1]


def test_offline_nodes_are_not_counted(
    caplog: pytest.LogCaptureFixture, task_identity: None
) -> None:
    nodes = [
        {"partition-id": i, "num-partitions": 5, "memory-mb": mb}
        for i, mb in enumerate((3, 6, 9.5, 20))
    ]
    grid = CountingGrid(nodes)
    s = profl()
    s.discover(grid, 0, timeout=10)
    assert "budgets known for 4 online nodes: 3, 6, 9.5, 20 MB" in caplog.text
    grid.offline.add(4)  # the 20 MB node is killed
    assert (
        s.nodes.summary(grid.get_node_ids())
        == "3 online nodes: 3, 6, 9.5 MB; 1 offline, not counted"
    )
    caplog.clear()
    grid.contexts[5] = Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 4, "num-partitions": 5, "memory-mb": 12},
        state=RecordDict(),
        run_config={},
    )
    s.discover(grid, 1, timeout=10)  # a new node joins: the line is written again
    assert (
        "budgets known for 4 online nodes: 3, 6, 9.5, 12 MB; 1 offline, not counted" in caplog.text
    )
    assert grid.queries == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}


def test_run_goes_on_without_a_nan_node(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, task_identity: None
) -> None:
    nodes = [{"partition-id": i, "num-partitions": 300} for i in range(6)]
    nodes[2]["memory-mb"] = float("nan")  # node id 3
    grid = CountingGrid(nodes)
    summary = run_profl(
        grid,
        {
            "preset": "laptop",
            "data-dir": str(data_dir),
            "outputs-dir": str(tmp_path),
            "width": 0.25,
            "memory-profile": "uniform",
            "memory-scale": 4.0,  # every other node holds every step
            "seed": 3,
            "fraction-train": 1.0,
            "min-rounds-per-step": 1,
            "max-rounds-stage1": 1,
            "num-server-rounds": REASK_LEFT_OUT_ROUNDS + 6,  # the node is asked again once
            "max-rounds-stage2": 2,
            "em-window": 2,
            "eval-every": 100,
            "checkpoint-every": 0,
        },
    )
    assert summary["schedule_done"] and summary["rejected_replies"] == 0
    trained = {node for node, _, _ in grid.train_requests}
    assert trained == {1, 2, 4, 5, 6}  # every node but the NaN one, which never is
    assert len(summary["budgets_mb"]) == 5
    assert len(left_out_lines(caplog, 3)) == 1
    assert summary["rounds"] > REASK_LEFT_OUT_ROUNDS  # so the node was asked again, once
    assert grid.queries[3] == 1 + summary["rounds"] // REASK_LEFT_OUT_ROUNDS


def test_memory_unaware_profl_with_plans_is_never_refused(data_dir: Path, tmp_path: Path) -> None:
    """Without budgets (the upper bound) each order's estimate is the one the node makes."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    # 5 MB: above the data and runtime terms (3.7 MB), below every step's need
    nodes = [{"partition-id": i, "num-partitions": 300, "memory-mb": 5.0} for i in range(3)]
    summary = run_profl(
        InProcessGrid(nodes),
        {"preset": "laptop", "data-dir": str(data_dir), "outputs-dir": str(tmp_path),
         "width": 0.25, "plans": "exact", "overrides": "method.memory_aware=false",
         "num-server-rounds": 4, "min-rounds-per-step": 1, "eval-every": 100,
         "checkpoint-every": 0},
    )  # fmt: skip
    assert summary["rounds"] == 4 and summary["refusals"] == 0
    assert summary["rounds_without_update"] == 0
