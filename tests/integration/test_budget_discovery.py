"""The strategy asks nodes for their budgets: bad ones left out and asked rarely, offline
ones not counted; a run goes on without a node whose budget is not a number."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from profl_strategy.engine.nodes import REASK_LEFT_OUT_ROUNDS
from profl_strategy.engine.protocol import QUERY_BUDGET
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.strategies import profl


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
def no_data_term(task_identity: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """These nodes have no data (the budget bookkeeping is under test): no data term, and
    budgets read as typed. tests/integration/test_client.py covers the node's data and
    runtime terms."""
    monkeypatch.setattr("client_app.node.call_overhead_mb", lambda *args: 0.0)


def left_out_lines(caplog: pytest.LogCaptureFixture, node: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"node {node} is left out" in r.getMessage()]


def test_bad_node_is_logged_once_asked_rarely_and_rejoins_when_fixed(
    caplog: pytest.LogCaptureFixture, no_data_term: None
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
    no_data_term: None,
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
    caplog: pytest.LogCaptureFixture, no_data_term: None
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


@pytest.mark.slow
def test_run_goes_on_without_a_nan_node(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, no_data_term: None
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
            "data-subsample": 0.25,  # 50 rows a node: the rounds, not the learning, count here
        },
    )
    assert summary["schedule_done"] and summary["rejected_replies"] == 0
    trained = {node for node, _, _ in grid.train_requests}
    assert trained == {1, 2, 4, 5, 6}  # every node but the NaN one, which never is
    assert len(summary["budgets_mb"]) == 5
    assert len(left_out_lines(caplog, 3)) == 1
    assert summary["rounds"] > REASK_LEFT_OUT_ROUNDS  # so the node was asked again, once
    assert grid.queries[3] == 1 + summary["rounds"] // REASK_LEFT_OUT_ROUNDS


@pytest.mark.slow
@pytest.mark.usefixtures("task_identity")
def test_memory_unaware_profl_with_plans_is_never_refused(data_dir: Path, tmp_path: Path) -> None:
    """Ignoring memory, each order's estimate is still the one the node makes."""
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
