"""Width-scaled baselines: HeteroFL, FedRolex and AllSmall (see :mod:`.submodel`)."""

from __future__ import annotations

import copy
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message
from flwr.common import log
from flwr.serverapp import Grid
from torch import nn

from profl_strategy.engine.engine import RoundOutcome, RoundPlan
from profl_strategy.engine.merge import merge_updates
from profl_strategy.engine.protocol import (
    ARRAYS,
    BNStatsQuery,
    Refused,
    Statistics,
    WidthOrder,
    read_reply,
)
from profl_strategy.engine.rounds import array_problem
from profl_strategy.memory.model import estimate_forward, estimate_full
from profl_strategy.methods.baselines.static_bn import pool_statistics, statistics_of
from profl_strategy.methods.baselines.submodel import (
    Payload,
    Tier,
    TieredMethod,
    to_numpy,
    to_record,
)
from profl_strategy.methods.baselines.width import (
    DEFAULT_RATIOS,
    SlicePlan,
    classifier_keys,
    groups_for,
    make_plan,
    shapes_of,
    slice_state,
    sub_key,
    width_model,
)
from profl_strategy.models import build_full_model


def ratios_of(method_config: dict[str, Any]) -> tuple[float, ...]:
    """``method.ratios``, largest first; each must lie in (0, 1]."""
    ratios = tuple(sorted({float(r) for r in method_config.get("ratios", DEFAULT_RATIOS)}))[::-1]
    if not ratios or not all(0 < r <= 1 for r in ratios):
        raise ValueError(f"method.ratios must lie in (0, 1], got {ratios}")
    return ratios


class HeteroFL(TieredMethod):
    """Static nested width tiers; every parameter entry averaged over the nodes holding it.

    Diao et al., ICLR 2021. A node of rate ``r`` trains channels ``0 .. r*C-1``
    of every layer. Options (``method``): ``ratios`` (model rates, default
    1, 1/2, 1/4, 1/8, 1/16) and ``label_mask`` (HeteroFL's masked classifier for
    non-IID data) and ``static_bn`` (default on: before the global model is read,
    the last merged round's nodes that can hold a forward pass of the full model
    report its BN statistics on their data, see :mod:`.static_bn`; off: BN statistics are
    averaged per slice like every other entry). Not reproduced: the "scaler",
    which divides a sub-model's activations by its rate during training; every
    conv here is followed by BN, which cancels that factor.
    """

    rolling = False

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.ratios = ratios_of(mc)
        self.label_mask = bool(mc.get("label_mask", False))
        self.static_bn = bool(mc.get("static_bn", True))
        # (round, nodes, MB of a forward pass) for the BN statistics still to ask (refresh)
        self._bn_pending: tuple[int, list[int], float] | None = None
        super().__init__(**kwargs)
        self._groups = groups_for(self.key)
        self._sub_shapes: dict[float, dict[str, tuple[int, ...]]] = {}
        self._classifier = classifier_keys(self.model)

    def build_model(self) -> nn.Module:
        return self.seeded(lambda: build_full_model(self.key.spec()))

    def make_ladder(self) -> list[Tier]:
        return [
            Tier(f"r={r:g}", r, estimate_full(sub_key(self.key, r), self.batch_size).total_mb)
            for r in self.ratios
        ]

    def offset(self, server_round: int) -> int:
        """Where the channel window starts: always 0 for HeteroFL."""
        return 0

    def sub_shapes(self, ratio: float) -> dict[str, tuple[int, ...]]:
        """State shapes of the width-``ratio`` model (built once per ratio)."""
        if ratio not in self._sub_shapes:
            self._sub_shapes[ratio] = shapes_of(width_model(self.key, ratio).state_dict())
        return self._sub_shapes[ratio]

    def plan(self, ratio: float, server_round: int) -> SlicePlan:
        """Index sets of a width-``ratio`` node in ``server_round``."""
        full = shapes_of(self.model.state_dict())
        return make_plan(full, self.sub_shapes(ratio), self.offset(server_round), self._groups)

    def payload(self, tier: Tier, server_round: int) -> Payload:
        plan = self.plan(tier.value, server_round)
        sub = slice_state(to_numpy(self.model.state_dict()), plan)
        return Payload(to_record(sub), shapes_of(sub), {k: (k, idx) for k, idx in plan.items()})

    def order(self, tier: Tier, server_round: int) -> WidthOrder:
        return WidthOrder(run=self.run, server_round=server_round, need_mb=tier.need_mb,
                          enforce_budget=self.memory_aware, ratio=tier.value,
                          label_mask=self.label_mask)  # fmt: skip

    def apply(self, plan: RoundPlan, outcome: RoundOutcome) -> None:
        """Per-entry mean over the nodes whose window holds the entry (the engine's merge);
        with the label mask, classifier rows only from nodes that hold the label."""
        rows = {}
        for r in outcome.good:
            if self.label_mask and r.trained.labels is not None:
                labels = np.asarray(r.trained.labels, dtype=np.int64)
                rows[r.node] = dict.fromkeys(self._classifier, labels)
        merged = merge_updates(to_numpy(self.model.state_dict()), outcome.updates(rows))
        self.model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in merged.items()}, strict=False
        )

    def after_merge(self, grid: Grid, plan: RoundPlan, outcome: RoundOutcome) -> dict[str, Any]:
        """Static BN: remember whom to ask for the merged model's BN statistics.

        Training reads batch statistics only, so the global model's own are needed
        only when it is read: :meth:`refresh` asks this round's nodes then.
        """
        if self.static_bn:
            need = estimate_forward(self.key, self.batch_size).total_mb
            merged = [r.node for r in outcome.good]
            nodes = [n for n in merged if not self.memory_aware or self.budgets[n] >= need]
            self._bn_pending = (plan.server_round, nodes, need)
        return {}

    def refresh(self, grid: Grid) -> dict[str, Any]:
        """Static BN: replace the merged BN statistics by the global model's own, asked of
        the last merged round's nodes that can hold a forward pass of the full model."""
        if self._bn_pending is None:
            return {}
        server_round, nodes, need = self._bn_pending
        self._bn_pending = None
        shapes = {k: tuple(v.shape) for k, v in statistics_of(self.model).items()}
        query = BNStatsQuery(run=self.run, server_round=server_round, need_mb=need,
                             enforce_budget=self.memory_aware)  # fmt: skip
        arrays = ArrayRecord(self.model.state_dict())
        msgs = [query.message(arrays, n, self.round_timeout) for n in nodes]
        stats, failed, rejected = [], 0, 0
        for reply in grid.send_and_receive(msgs, timeout=self.round_timeout) if msgs else []:
            if reply.has_error():  # counted apart from bad content, as train replies are
                failed += 1
                log(WARNING, "BN statistics of node %s failed: error reply: %s",
                    reply.metadata.src_node_id, reply.error.reason)  # fmt: skip
                continue
            answer = read_reply(reply.content)
            problem = self.statistics_problem(reply, answer, shapes)
            if problem:
                rejected += 1
                log(WARNING, "BN statistics of node %s rejected: %s", reply.metadata.src_node_id,
                    problem)  # fmt: skip
                continue
            arrays_np = {k: a.numpy() for k, a in reply.content.array_records[ARRAYS].items()}
            stats.append((arrays_np, float(answer.num_examples)))  # type: ignore[union-attr]
        if not stats:
            log(WARNING, "round %d: no BN statistics (%d nodes asked, need %.1f MB); the "
                "merged ones stay", server_round, len(msgs), need)  # fmt: skip
        else:
            pooled = pool_statistics(stats)
            self.model.load_state_dict({k: torch.from_numpy(v) for k, v in pooled.items()},
                                       strict=False)  # fmt: skip
        return {"bn_stats_nodes": len(stats), "bn_stats_failed": failed,
                "bn_stats_rejected": rejected}  # fmt: skip

    @staticmethod
    def statistics_problem(reply: Message, answer: object, shapes: dict) -> str | None:
        """Why a BN-statistics reply without an error cannot be pooled, or None."""
        if isinstance(answer, Refused):
            return f"refused: needs {answer.need_mb:.1f} MB, budget {answer.memory_mb:.1f} MB"
        if not isinstance(answer, Statistics):
            return "not a statistics reply"
        return array_problem(reply.content, shapes, answer.num_examples)

    def final_model(self) -> nn.Module:
        """The full-width global model."""
        return copy.deepcopy(self.model)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"bn_pending": self._bn_pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._bn_pending = state.get("bn_pending")


class FedRolex(HeteroFL):
    """HeteroFL with a rolling window: in round ``t`` channels ``t .. t+rC-1`` (mod C).

    Alam et al., NeurIPS 2022. Every channel of the server model is trained
    over time, also those no node could hold in a static nested window.
    """

    rolling = True

    def offset(self, server_round: int) -> int:
        """The window moves one channel per round and wraps around."""
        return server_round


class AllSmall(TieredMethod):
    """One width-scaled model the smallest known budget holds, trained by all (FedAvg).

    The width is the largest of ``method.ratios`` whose estimate fits the
    smallest budget discovered in the first round; it is then fixed for the
    run (nodes joining later with less memory are not eligible).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.ratios = ratios_of(dict(kwargs.get("method_config") or {}))
        self.ratio: float | None = None
        super().__init__(**kwargs)

    def build_model(self) -> nn.Module:
        ratio = 1.0 if self.ratio is None else self.ratio
        return self.seeded(lambda: width_model(self.key, ratio))

    def make_ladder(self) -> list[Tier]:
        ratios = self.ratios if self.ratio is None else (self.ratio,)
        return [
            Tier(f"r={r:g}", r, estimate_full(sub_key(self.key, r), self.batch_size).total_mb)
            for r in ratios
        ]

    def choose_ratio(self) -> float:
        """The largest ratio whose estimate fits the smallest known budget."""
        smallest = min(self.budgets.values())
        ladder = self.make_ladder()
        fit = next((t for t in ladder if t.need_mb <= smallest), None)
        if fit is None:
            log(
                WARNING,
                "AllSmall: even %s (%.1f MB) exceeds the smallest budget %.1f MB; "
                "nodes that cannot hold it are left out",
                ladder[-1].name,
                ladder[-1].need_mb,
                smallest,
            )
            fit = ladder[-1]
        return 1.0 if not self.memory_aware else fit.value

    def discover(self, grid: Grid, server_round: int, timeout: float) -> None:
        """After the first budgets arrive, fix the width and build the model at it."""
        super().discover(grid, server_round, timeout)
        if self.ratio is None and self.budgets:
            self.fix_width()

    def fix_width(self) -> None:
        """Fix the width for the run from the budgets known now, and build the model at it."""
        self.ratio = self.choose_ratio()
        self._ladder = None
        self.model = self.build_model()
        log(INFO, "AllSmall: width ratio %g (model width %g)", self.ratio, self.width)

    @property
    def width(self) -> float:
        """The trained model's width multiplier."""
        return self.key.width * (1.0 if self.ratio is None else self.ratio)

    def tier_for(self, budget_mb: float) -> Tier | None:
        if self.ratio is None:
            return None
        return super().tier_for(budget_mb)

    def payload(self, tier: Tier, server_round: int) -> Payload:
        state = to_numpy(self.model.state_dict())
        return Payload(to_record(state), shapes_of(state))

    def order(self, tier: Tier, server_round: int) -> WidthOrder:
        """Plain FedAvg on one model: no masked classifier."""
        return WidthOrder(run=self.run, server_round=server_round, need_mb=tier.need_mb,
                          enforce_budget=self.memory_aware, ratio=tier.value)  # fmt: skip

    def final_model(self) -> nn.Module:
        """The small model itself."""
        return copy.deepcopy(self.model)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"allsmall_ratio": self.ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ratio = state.get("allsmall_ratio")
        self._ladder = None
        self.model = self.build_model()
        super().load_state_dict(state)
