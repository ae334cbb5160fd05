"""FedAvg-full and ExclusiveFL: the whole model, trained by the nodes whose budget holds it.

With ``memory_aware: false`` every node trains the whole model (FedAvg-full, the
reference that ignores memory); with it on, only nodes that hold full-model
training take part (ExclusiveFL). One full-model step, ``num_rounds`` rounds.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord
from torch import nn

from profl_strategy.engine.engine import Assignment, Engine, RoundPlan
from profl_strategy.engine.protocol import StepOrder
from profl_strategy.engine.seeding import seeded
from profl_strategy.engine.step import STAGE_FULL, Step
from profl_strategy.memory.model import estimate_step
from profl_strategy.models import build_full_model


class FullModel(Engine):
    """Plain FedAvg of the whole model over the nodes that can train it."""

    def __init__(self, **engine: Any) -> None:
        super().__init__(**engine)
        self.step = Step(STAGE_FULL, self.key.spec().num_blocks - 1)
        if self.schedule.steps != [self.step]:
            raise ValueError(
                f"{type(self).__name__} trains the whole model: set method.full_model: true"
            )
        with seeded(self.seed):
            self.model = build_full_model(self.key.spec())
        self.need = estimate_step(self.key, self.step, self.batch_size).total_mb

    def remaining_needs(self) -> dict[str, float]:
        return {str(self.step): self.need}

    def plan_round(self, server_round: int, online: set[int]) -> RoundPlan:
        """Eligible: every node with a known budget that holds the whole model."""
        eligible = [
            n
            for n in online
            if n in self.budgets and (not self.memory_aware or self.need <= self.budgets[n])
        ]
        state = self.model.state_dict()
        arrays = ArrayRecord(state)
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        assignments = [
            Assignment(
                n,
                StepOrder(run=self.run, server_round=server_round, need_mb=self.need,
                          enforce_budget=self.memory_aware, step=self.step),
                arrays,
                shapes,
            )
            for n in self.select(eligible, online)
        ]  # fmt: skip
        return RoundPlan(
            server_round, len(online), len(eligible), self.need, assignments, self.nodes
        )

    def final_model(self) -> nn.Module:
        return self.model

    def memory_summary(self) -> dict[str, Any]:
        need = round(self.need, 2)
        return {"step_peak_mb_est": {str(self.step): need}, "worst_peak_mb_est": need}
