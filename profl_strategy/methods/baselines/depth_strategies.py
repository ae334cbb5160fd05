"""Depth-scaled baselines: DepthFL and InclusiveFL (see :mod:`.submodel`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from profl_strategy.engine.engine import RoundOutcome, RoundPlan
from profl_strategy.engine.protocol import DepthOrder
from profl_strategy.methods.baselines.depth import (
    DepthClassifier,
    DepthNet,
    DepthSubModel,
    depth_need_mb,
    heads_for,
    kd_ramp,
    key_map,
)
from profl_strategy.methods.baselines.submodel import Payload, Tier, TieredMethod, to_record
from profl_strategy.methods.baselines.width import shapes_of


class DepthFL(TieredMethod):
    """Depth tiers: blocks ``0 .. k-1`` with a classifier after each, all trained.

    Kim et al., ICLR 2023, as DepthFL(FedAvg): parameters are averaged over the
    nodes holding them (FedDyn is not used, as for every method here). Options:
    ``kd`` (mutual self-distillation between the heads, with DepthFL's
    ramp-up over ``kd_rampup`` of the rounds) and ``ensemble`` (evaluate the
    mean of all heads instead of the deepest classifier).
    """

    all_heads = True
    group_tops = False
    model: DepthNet  # the engine's ``nn.Module``: blocks, heads and (InclusiveFL) tops

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.kd = bool(mc.get("kd", False))
        self.kd_rampup = float(mc.get("kd_rampup", 0.3))
        self.ensemble = bool(mc.get("ensemble", False))
        super().__init__(**kwargs)
        self.num_blocks = self.key.spec().num_blocks
        self._sub_shapes: dict[int, dict[str, tuple[int, ...]]] = {}

    def build_model(self) -> nn.Module:
        return self.seeded(lambda: DepthNet(self.key.spec(), self.group_tops))

    def make_ladder(self) -> list[Tier]:
        last = self.key.spec().num_blocks
        return [
            Tier(
                f"k={k}",
                k,
                depth_need_mb(self.key, k, heads_for(k, self.all_heads), self.batch_size),
            )
            for k in range(last, 0, -1)
        ]

    def sub_shapes(self, depth: int) -> dict[str, tuple[int, ...]]:
        """State shapes of the depth-``depth`` sub-model (built once per depth)."""
        if depth not in self._sub_shapes:
            model = DepthSubModel(self.key.spec(), depth, heads_for(depth, self.all_heads))
            self._sub_shapes[depth] = shapes_of(model.state_dict())
        return self._sub_shapes[depth]

    def payload(self, tier: Tier, server_round: int) -> Payload:
        depth = int(tier.value)
        shapes = self.sub_shapes(depth)
        mapping = key_map(list(shapes), depth, self.num_blocks, self.group_tops)
        state = self.model.state_dict()
        sub = {k: state[g].detach().cpu().numpy() for k, g in mapping.items()}
        return Payload(to_record(sub), shapes, {k: (g, ()) for k, g in mapping.items()})

    def kd_weight(self, server_round: int) -> float:
        """DepthFL's consistency weight this round (0 without self-distillation)."""
        if not self.kd:
            return 0.0
        return kd_ramp(server_round, self.kd_rampup * self.schedule.max_rounds())

    def order(self, tier: Tier, server_round: int) -> DepthOrder:
        depth = int(tier.value)
        return DepthOrder(run=self.run, server_round=server_round, need_mb=tier.need_mb,
                          enforce_budget=self.memory_aware, depth=depth,
                          heads=heads_for(depth, self.all_heads),
                          kd_weight=self.kd_weight(server_round))  # fmt: skip

    def eval_depth(self) -> int:
        """Depth of the deliverable model: the deepest tier some known node trains.

        Blocks and heads beyond it are never trained by anyone, so the global
        model, as the method delivers it, ends there.
        """
        depths = [int(t.value) for t in self.assignments(self.budgets).values()]
        return max(depths) if depths else self.num_blocks

    def final_model(self) -> nn.Module:
        """The deepest classifier (with ``ensemble``: the mean of all heads up to it)."""
        return DepthClassifier(
            self.key.spec(),
            self.model.state_dict(),
            self.eval_depth(),
            ensemble=self.ensemble,
            group_tops=self.group_tops,
        )


class InclusiveFL(DepthFL):
    """Depth groups with their own top block and classifier; momentum distillation.

    Liu et al., KDD 2022. A depth-``k`` node trains blocks ``0 .. k-2`` (shared
    by every deeper group), its group's own copy of block ``k-1`` and the
    group's classifier. After aggregation, the group-local top block of group
    ``k`` takes ``(1-beta)`` of its own update plus ``beta`` times the mean
    update of the next larger group's blocks ``k-1 .. k'-1`` that have its
    shape (in a CNN whose stages differ in shape that is block ``k-1``; in
    the ViT, every encoder group). ``beta`` is ``method.momentum`` (0.2 in the
    authors' run script). The evaluated model is the largest group's: its
    blocks, top block and classifier.
    """

    all_heads = False
    group_tops = True

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.beta = float(mc.get("momentum", 0.2))
        if not 0 <= self.beta <= 1:
            raise ValueError(f"method.momentum must lie in [0, 1], got {self.beta}")
        super().__init__(**kwargs)
        self.kd = self.ensemble = False  # one classifier per model: nothing to distil or average

    def groups(self) -> list[int]:
        """Depths that some known node trains."""
        return sorted({int(t.value) for t in self.assignments(self.budgets).values()})

    def _layer(self, prefix: str) -> nn.Module:
        kind, idx = prefix.rstrip(".").split(".")
        return self.model.tops[idx] if kind == "tops" else self.model.blocks[int(idx)]

    def distill(self, old: dict[str, torch.Tensor]) -> None:
        """Momentum distillation into every smaller group's top block."""
        new = self.model.state_dict()
        groups = self.groups()
        last = self.num_blocks
        for k in groups:
            larger = [g for g in groups if g > k]
            if k >= last or not larger:
                continue
            k2 = min(larger)
            target = f"tops.{k}."
            names = {n: tuple(p.shape) for n, p in self._layer(target).named_parameters()}
            sources = []
            for j in range(k - 1, k2):
                prefix = f"tops.{k2}." if j == k2 - 1 and k2 < last else f"blocks.{j}."
                shapes = {n: tuple(p.shape) for n, p in self._layer(prefix).named_parameters()}
                if shapes == names:
                    sources.append(prefix)
            update = {}
            for n in names:
                own = new[target + n] - old[target + n]
                mom = torch.stack([new[s + n] - old[s + n] for s in sources]).mean(0)
                update[target + n] = old[target + n] + (1 - self.beta) * own + self.beta * mom
            self.model.load_state_dict(update, strict=False)

    def apply(self, plan: RoundPlan, outcome: RoundOutcome) -> None:
        """The engine's merge, then momentum distillation into the smaller groups' tops."""
        old = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        super().apply(plan, outcome)
        self.distill(old)
