"""A step's identity: which stage, and which block is trained.

Every message names the step it trains, the engine logs it each round and the
schedule walks a list of them, so the type lives with the engine; what a stage
means for the sub-model is the methods' business
(:mod:`profl_strategy.methods.profl.step_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

STAGE_FULL = 0  # ordinary full-model training (the FedAvg and ExclusiveFL baselines)
STAGE_SHRINK = 1
STAGE_GROW = 2
STAGE_CONDENSE = 3  # stage 1: distil trained block b into out.{b-1} (condense="distill")
STAGES = (STAGE_FULL, STAGE_SHRINK, STAGE_GROW, STAGE_CONDENSE)


@dataclass(frozen=True)
class Step:
    """One step of the schedule: which stage, and which block is trained."""

    stage: int
    block: int

    def __str__(self) -> str:
        return f"s{self.stage}b{self.block}"
