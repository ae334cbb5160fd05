"""The baselines as subclasses of :class:`~profl_strategy.strategy.ProFL`.

They reuse everything of ProFL that is not the method: budget discovery,
selection size (``fraction-train`` of the online nodes, at least
``min-train-nodes``, capped by the eligible ones), reply validation rules,
the ``min-replies`` rule, the round loop, evaluation, checkpoints and the
results record. What changes is which sub-model each node trains and how replies are merged:

- :class:`AllSmall`: one width-scaled model that the smallest known budget
  holds, trained by every node (plain FedAvg).
- :class:`HeteroFL`: static nested width tiers, per-entry aggregation.
- :class:`FedRolex`: HeteroFL whose channel window rolls every round.
- :class:`DepthFL`: first ``k`` blocks with a classifier after each, all trained,
  with optional mutual self-distillation.
- :class:`InclusiveFL`: first ``k`` blocks with one classifier on top, a
  group-local top block, and momentum distillation from the next larger group.

A node's tier is the largest one whose estimate by ProFL's memory model fits
its budget; nodes fitting none are not eligible. All run on the one-step
full-model schedule (``method.full_model: true``) for ``num_rounds`` rounds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from torch import nn

from profl_strategy.replies import reply_problem
from profl_strategy.step_model import STAGE_FULL, Step
from profl_strategy.strategy import ProFL


@dataclass(frozen=True)
class Tier:
    """One sub-model size: a width ratio or a depth, and its estimated peak MB."""

    name: str
    value: float
    need_mb: float


@dataclass
class Sent:
    """What one node was sent this round, to check and merge its reply."""

    tier: Tier
    shapes: dict[str, tuple[int, ...]]
    info: Any = None  # a slice plan (width) or a key map (depth)


@dataclass
class Payload:
    arrays: ArrayRecord
    shapes: dict[str, tuple[int, ...]]
    info: Any = field(default=None)


def to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()})


class SubModelStrategy(ProFL):
    """Shared machinery: per-node tiers, per-node payloads, per-node reply checks.

    Subclasses define :meth:`build_model`, :meth:`make_ladder`, :meth:`payload`,
    :meth:`tier_config`, :meth:`merge` and :meth:`final_model`; ``self.model``
    holds their global state.
    """

    message_type = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        last = self.key.spec().num_blocks - 1
        if self.schedule.steps != [Step(STAGE_FULL, last)]:
            raise ValueError(
                f"{type(self).__name__} trains whole (sub-)models in every round: "
                "set method.full_model: true"
            )
        self.seed = int(kwargs["seed"])
        self.model = self.build_model()
        self._expect: dict[int, Sent] = {}
        self._ladder: list[Tier] | None = None

    # ---- what a subclass defines ------------------------------------------------
    def build_model(self) -> nn.Module:
        """The global state, initialised from the run seed."""
        raise NotImplementedError

    def make_ladder(self) -> list[Tier]:
        """Every sub-model size, largest first."""
        raise NotImplementedError

    def payload(self, tier: Tier, server_round: int) -> Payload:
        """The arrays a node of ``tier`` gets this round."""
        raise NotImplementedError

    def tier_config(self, base: ConfigRecord, tier: Tier, server_round: int) -> ConfigRecord:
        """The message's config: run record, step and what the sub-model is."""
        raise NotImplementedError

    def merge(self, good: list[tuple[int, RecordDict]]) -> None:
        """Fold valid replies (node order) into ``self.model``."""
        raise NotImplementedError

    # ---- tiers ------------------------------------------------------------------
    def ladder(self) -> list[Tier]:
        """Sub-model sizes, largest first (computed once: estimates run a forward)."""
        if self._ladder is None:
            self._ladder = self.make_ladder()
            log(
                INFO,
                "%s tiers (estimated peak MB): %s",
                type(self).__name__,
                ", ".join(f"{t.name}: {t.need_mb:.1f}" for t in self._ladder),
            )
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
        """Estimated peak MB per tier, nodes per tier, and the worst peak a node is asked for.

        ``run_profl``'s per-step figures describe the full model for every
        one-step method; these are the figures of the sub-models actually used.
        """
        tiers = self.assignments(self.budgets)
        used = {t.name: t.need_mb for t in tiers.values()}
        return {
            "tier_peak_mb_est": {t.name: round(t.need_mb, 2) for t in self.ladder()},
            "nodes_per_tier": dict(Counter(t.name for t in tiers.values())),
            "not_eligible": len(self.budgets) - len(tiers),
            "worst_tier_peak_mb_est": round(max(used.values()), 2) if used else None,
        }

    # ---- one round ----------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Select among nodes that fit some tier; send each its own sub-model."""
        online = set(grid.get_node_ids())
        tiers = self.assignments(n for n in self.budgets if n in online)
        eligible = sorted(tiers, key=self._order)
        k = self.selection_size(len(online), len(eligible))
        selected = sorted(self.rng.sample(eligible, k), key=self._order)
        payloads: dict[Tier, Payload] = {}
        msgs, self._expect, down = [], {}, 0
        for n in selected:
            tier = tiers[n]
            if tier not in payloads:
                payloads[tier] = self.payload(tier, server_round)
            p = payloads[tier]
            cfg = self.tier_config(self.run_config, tier, server_round)
            cfg["enforce-budget"] = self.memory_aware
            self._expect[n] = Sent(tier, p.shapes, p.info)
            down += p.arrays.count_bytes()
            msgs.append(
                Message(
                    RecordDict({"arrays": p.arrays, "config": cfg}),
                    dst_node_id=n,
                    message_type=self.message_type,
                    group_id=str(server_round),
                )
            )
        needs = [tiers[n].need_mb for n in selected] or [t.need_mb for t in tiers.values()]
        self._last = {
            "eligible": len(eligible),
            "selected": len(selected),
            "online": len(online),
            # The largest sub-model this round asked of a node (its worst-case peak).
            "need_mb": max(needs) if needs else self.ladder()[-1].need_mb,
            "need_mb_min": min(needs) if needs else None,
            "bytes_down": down,
            "tiers_eligible": dict(Counter(tiers[n].name for n in eligible)),
            "tiers_selected": dict(Counter(tiers[n].name for n in selected)),
            "selected_nodes": [
                {
                    "node": n,
                    "partition": self.partition_ids.get(n, -1),
                    "budget_mb": self.budgets[n],
                    "tier": tiers[n].name,
                    "need_mb": tiers[n].need_mb,
                }
                for n in selected
            ],
        }
        return msgs

    def _valid(self, reply: Message) -> str | None:
        """Why a reply cannot be merged: ProFL's checks, against what *this node* was sent."""
        sent = self._expect.get(self._node_of(reply))
        if sent is None and not reply.has_error():
            return "reply from a node that was sent nothing this round"
        shapes = sent.shapes if sent is not None else {}
        reference = {k: SimpleNamespace(shape=s) for k, s in shapes.items()}
        return reply_problem(reply, shapes, reference)

    def step_model(self, step: Step) -> nn.Module:  # noqa: ARG002 - one step only
        """What is evaluated every round: the deliverable global model."""
        return self.final_model()

    def _seeded(self, build: Any) -> nn.Module:
        """Build a module from the run seed without disturbing the global torch RNG."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return build()
