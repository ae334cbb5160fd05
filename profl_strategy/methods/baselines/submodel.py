"""The sub-model baselines' shared part: a ladder of sizes (tiers), one per node.

Width scaling (:mod:`.width_strategies`: AllSmall, HeteroFL, FedRolex) and depth
scaling (:mod:`.depth_strategies`: DepthFL, InclusiveFL) are methods on the
strategy engine (:mod:`profl_strategy.engine.engine`): budgets, selection, screening,
the round loop and checkpoints are the engine's. What a family says:

- its ladder of sub-model sizes, largest first, each with its estimated peak
  by ProFL's own memory model, so every method faces the same devices;
- what a node of a tier is sent (:meth:`TieredMethod.payload`) and its order;
- how replies are placed in the global model for the engine's one merge.

A node's tier is the largest one whose estimate fits its budget; nodes that fit
none are not eligible. All run on the engine's one-step full-model schedule
(:class:`~profl_strategy.engine.fixed_schedule.FixedSchedule`, ``method.full_model:
true``) for ``num_rounds`` rounds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common import log
from torch import nn

from profl_strategy.engine.engine import Assignment, Engine, RoundPlan
from profl_strategy.engine.merge import Index
from profl_strategy.engine.protocol import Order
from profl_strategy.engine.seeding import seeded
from profl_strategy.engine.step import STAGE_FULL, Step


@dataclass(frozen=True)
class Tier:
    """One sub-model size: a width ratio or a depth, and its estimated peak MB."""

    name: str
    value: float
    need_mb: float


@dataclass
class Payload:
    """What a node of one tier gets: arrays, their shapes, and where they sit globally."""

    arrays: ArrayRecord
    shapes: dict[str, tuple[int, ...]]
    where: dict[str, tuple[str, Index]] | None = field(default=None)


def to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()})


class TieredMethod(Engine):
    """A method whose nodes train sub-models of a few sizes, picked by budget.

    Subclasses define :meth:`build_model`, :meth:`make_ladder`, :meth:`payload`,
    :meth:`order`, and :meth:`final_model`; ``self.model`` holds their global state.
    """

    def __init__(self, **engine: Any) -> None:
        super().__init__(**engine)
        last = self.key.spec().num_blocks - 1
        if self.schedule.steps != [Step(STAGE_FULL, last)]:
            raise ValueError(
                f"{type(self).__name__} trains whole (sub-)models in every round: "
                "set method.full_model: true"
            )
        self.model = self.build_model()
        self._ladder: list[Tier] | None = None

    # ---- what a family defines --------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The global state, initialised from the run seed."""
        raise NotImplementedError

    def make_ladder(self) -> list[Tier]:
        """Every sub-model size, largest first."""
        raise NotImplementedError

    def payload(self, tier: Tier, server_round: int) -> Payload:
        """The arrays a node of ``tier`` gets this round."""
        raise NotImplementedError

    def order(self, tier: Tier, server_round: int) -> Order:
        """The order a node of ``tier`` gets this round."""
        raise NotImplementedError

    # ---- tiers ------------------------------------------------------------------------
    def ladder(self) -> list[Tier]:
        """Sub-model sizes, largest first (computed once: estimates run a forward)."""
        if self._ladder is None:
            self._ladder = self.make_ladder()
            log(INFO, "%s tiers (estimated peak MB): %s", type(self).__name__,
                ", ".join(f"{t.name}: {t.need_mb:.1f}" for t in self._ladder))  # fmt: skip
        return self._ladder

    def tier_for(self, budget_mb: float) -> Tier | None:
        """The largest sub-model whose estimated peak fits ``budget_mb`` (None: none)."""
        ladder = self.ladder()
        if not self.memory_aware:
            return ladder[0]
        return next((t for t in ladder if t.need_mb <= budget_mb), None)

    def assignments(self, nodes: Iterable[int]) -> dict[int, Tier]:
        """Tier of every given node with a known budget that fits one."""
        out = {}
        for n in nodes:
            tier = self.tier_for(self.budgets[n]) if n in self.budgets else None
            if tier is not None:
                out[n] = tier
        return out

    def remaining_needs(self) -> dict[str, float]:
        """A node that holds the smallest sub-model takes part, so only it must fit."""
        smallest = self.ladder()[-1]
        return {f"the smallest {type(self).__name__} sub-model ({smallest.name})": smallest.need_mb}

    def memory_summary(self) -> dict[str, Any]:
        """Estimated peak MB per tier, nodes per tier, and the worst peak a node is asked for."""
        tiers = self.assignments(self.budgets)
        used = {t.name: t.need_mb for t in tiers.values()}
        return {
            "tier_peak_mb_est": {t.name: round(t.need_mb, 2) for t in self.ladder()},
            "nodes_per_tier": dict(Counter(t.name for t in tiers.values())),
            "not_eligible": len(self.budgets) - len(tiers),
            "worst_peak_mb_est": round(max(used.values()), 2) if used else None,
        }

    # ---- one round --------------------------------------------------------------------
    def plan_round(self, server_round: int, online: set[int]) -> RoundPlan:
        """Select among nodes that fit some tier; each gets its tier's sub-model."""
        tiers = self.assignments(n for n in self.budgets if n in online)
        selected = self.select(tiers, online)
        payloads: dict[Tier, Payload] = {}
        assignments = []
        for n in selected:
            tier = tiers[n]
            if tier not in payloads:
                payloads[tier] = self.payload(tier, server_round)
            p = payloads[tier]
            note = {"tier": tier.name, "need_mb": tier.need_mb}
            order = self.order(tier, server_round)
            assignments.append(Assignment(n, order, p.arrays, p.shapes, p.where, note))
        needs = [tiers[n].need_mb for n in selected] or [t.need_mb for t in tiers.values()]
        note = {
            "need_mb_min": min(needs) if needs else None,
            "tiers_eligible": dict(Counter(t.name for t in tiers.values())),
            "tiers_selected": dict(Counter(tiers[n].name for n in selected)),
        }
        # The largest sub-model this round asked of a node (its worst-case peak).
        need = max(needs) if needs else self.ladder()[-1].need_mb
        return RoundPlan(server_round, len(online), len(tiers), need, assignments, self.nodes,
                         note=note)  # fmt: skip

    def seeded(self, build: Any) -> nn.Module:
        """Build a module from the run seed without disturbing the global torch RNG."""
        with seeded(self.seed):
            return build()
