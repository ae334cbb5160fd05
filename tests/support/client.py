"""Messages the strategy sends to one node, for tests that call the ClientApp's handlers."""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, Message
from flwr.app.constants import DEFAULT_TTL

from profl_strategy.engine.budgets import MemoryProfile
from profl_strategy.engine.protocol import (
    QUERY_BUDGET,
    BudgetQuery,
    DataSpec,
    RunSpec,
    StepOrder,
    TrainSpec,
)
from profl_strategy.memory.model import estimate_full, estimate_step
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.memory.runtime import CPU_CALL_ALLOWANCE_MB
from profl_strategy.methods.profl.step_model import GlobalModel, Step, StepModel
from profl_strategy.task.model_key import ModelKey

KEY = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1)
STEP = Step(2, 1)

# The guard measures the process it runs in, which in pytest holds whatever earlier tests
# left: off here (tests/integration/test_memory_cap.py runs it in fresh processes).
NODE = {"partition-id": 3, "num-partitions": 200, "memory-guard": "false"}
# What a CPU node takes off its budget besides the model: its 300 Fashion-MNIST rows (uint8
# images, int64 labels) and the runtime allowance.
DATA_MB = 300 * (28 * 28 + 8) / 2**20 + CPU_CALL_ALLOWANCE_MB


def run_spec(data_dir: Path | str, subsample: float = 1.0) -> RunSpec:
    """The run every message carries: the quarter-width CNN on Fashion-MNIST, batch 16."""
    return RunSpec(
        model=KEY,
        data=DataSpec("fmnist", str(data_dir), "iid", 0.5, 2, subsample),
        train=TrainSpec(16, 1, 0.05, 0.9, 0.0, 0.0),
        memory=MemoryProfile("uniform-tiers", (1, 1), (0.3, 1.0)),
        full_peak_mb=estimate_full(KEY, 16).total_mb,
        seed=0,
    )


def step_need_mb(plan: Plan | None = None) -> float:
    """The memory model's need of ``STEP`` at batch 16, plain or with ``plan``."""
    if plan is None:
        return estimate_step(KEY, STEP, 16).total_mb
    from profl_strategy.memory.plans.memory import estimate_plan

    return estimate_plan(KEY, STEP, 16, plan).total_mb


def message(
    data_dir: Path | str,
    kind: str,
    *,
    subsample: float = 1.0,
    plan: Plan | None = None,
    need_mb: float | None = None,
) -> Message:
    """A budget query or a train order for ``STEP``, as the strategy sends them."""
    run = run_spec(data_dir, subsample)
    if kind == QUERY_BUDGET:
        return BudgetQuery(run).message(node=1, server_round=1, ttl=DEFAULT_TTL)
    order = StepOrder(
        run=run,
        server_round=1,
        need_mb=step_need_mb(plan) if need_mb is None else need_mb,
        step=STEP,
        plan=None if plan is None else plan.label(),
    )
    sub = StepModel(KEY.spec(), STEP, KEY.out_depth)
    state = GlobalModel(KEY.spec(), KEY.out_depth).state_dict()
    arrays = ArrayRecord({k: state[k] for k in sub.state_dict()})
    return order.message(arrays, node=1, ttl=DEFAULT_TTL)
