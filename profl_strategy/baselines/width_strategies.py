"""Width-scaled baselines: HeteroFL, FedRolex and AllSmall (see :mod:`.submodel`)."""

from __future__ import annotations

import copy
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from torch import nn

from profl_strategy.baselines.protocol import QUERY_BN_STATS, TRAIN_WIDTH, width_record
from profl_strategy.baselines.static_bn import pool_statistics, statistics_of
from profl_strategy.baselines.submodel import Payload, SubModelStrategy, Tier, to_numpy, to_record
from profl_strategy.baselines.width import (
    DEFAULT_RATIOS,
    Plan,
    SliceUpdate,
    aggregate_slices,
    classifier_keys,
    groups_for,
    make_plan,
    shapes_of,
    slice_state,
    sub_key,
    width_model,
)
from profl_strategy.memory import estimate_forward, estimate_full
from profl_strategy.models import build_full_model
from profl_strategy.protocol import step_record
from profl_strategy.replies import merge_weighted, reply_problem


class HeteroFL(SubModelStrategy):
    """Static nested width tiers; every parameter entry averaged over the nodes holding it.

    Diao et al., ICLR 2021. A node of rate ``r`` trains channels ``0 .. r*C-1``
    of every layer. Options (``method``): ``ratios`` (model rates, default
    1, 1/2, 1/4, 1/8, 1/16) and ``label_mask`` (HeteroFL's masked classifier for
    non-IID data) and ``static_bn`` (default on: after every merge, the
    round's nodes that can hold a forward pass of the full model report its BN
    statistics on their data, see :mod:`.static_bn`; off: BN statistics are
    averaged per slice like every other entry). Not reproduced: the "scaler",
    which divides a sub-model's activations by its rate during training; every
    conv here is followed by BN, which cancels that factor.
    """

    message_type = TRAIN_WIDTH
    rolling = False

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.ratios = tuple(sorted({float(r) for r in mc.get("ratios", DEFAULT_RATIOS)}))[::-1]
        if not self.ratios or not all(0 < r <= 1 for r in self.ratios):
            raise ValueError(f"method.ratios must lie in (0, 1], got {self.ratios}")
        self.label_mask = bool(mc.get("label_mask", False))
        self.static_bn = bool(mc.get("static_bn", True))
        self._merged: list[int] = []
        super().__init__(**kwargs)
        self._groups = groups_for(self.key)
        self._sub_shapes: dict[float, dict[str, tuple[int, ...]]] = {}
        self._classifier = classifier_keys(self.model)

    def build_model(self) -> nn.Module:
        return self._seeded(lambda: build_full_model(self.key.spec()))

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

    def plan(self, ratio: float, server_round: int) -> Plan:
        """Index sets of a width-``ratio`` node in ``server_round``."""
        full = shapes_of(self.model.state_dict())
        return make_plan(full, self.sub_shapes(ratio), self.offset(server_round), self._groups)

    def payload(self, tier: Tier, server_round: int) -> Payload:
        plan = self.plan(tier.value, server_round)
        sub = slice_state(to_numpy(self.model.state_dict()), plan)
        return Payload(to_record(sub), shapes_of(sub), plan)

    def tier_config(self, base: ConfigRecord, tier: Tier, server_round: int) -> ConfigRecord:
        return width_record(
            base,
            self.schedule.current,
            server_round,
            tier.need_mb,
            ratio=tier.value,
            label_mask=self.label_mask,
        )

    def merge(self, good: list[tuple[int, RecordDict]]) -> None:
        updates = []
        for node, content in good:
            m = content["metrics"]
            rows = None
            if self.label_mask and "labels" in m:
                labels = np.asarray(list(m["labels"]), dtype=np.int64)
                rows = dict.fromkeys(self._classifier, labels)
            updates.append(
                SliceUpdate(
                    {k: a.numpy() for k, a in content["arrays"].items()},
                    self._expect[node].info,
                    float(m["num-examples"]),
                    rows,
                )
            )
        merged = aggregate_slices(to_numpy(self.model.state_dict()), updates)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in merged.items()})
        self._merged = [node for node, _ in good]

    def after_merge(self, grid: Grid, server_round: int, timeout: float) -> None:
        """Static BN: replace the merged BN statistics by the global model's own."""
        if not self.static_bn:
            return
        need = estimate_forward(self.key, self.batch_size).total_mb
        nodes = [n for n in self._merged if not self.memory_aware or self.budgets[n] >= need]
        reference = statistics_of(self.model)
        cfg = step_record(self.run_config, self.schedule.current, server_round, need)
        cfg["enforce-budget"] = self.memory_aware
        arrays = ArrayRecord(self.model.state_dict())
        msgs = [
            Message(
                RecordDict({"arrays": arrays, "config": cfg}),
                dst_node_id=n,
                message_type=QUERY_BN_STATS,
                group_id=str(server_round),
                ttl=timeout,
            )
            for n in nodes
        ]
        stats, rejected = [], 0
        for reply in grid.send_and_receive(msgs, timeout=timeout) if msgs else []:
            problem = reply_problem(reply, reference, reference)
            if problem:
                rejected += 1
                log(WARNING, "BN statistics of node %s rejected: %s", self._node_of(reply), problem)
                continue
            arrays = {k: a.numpy() for k, a in reply.content["arrays"].items()}
            stats.append((arrays, float(reply.content["metrics"]["num-examples"])))
        self._last.update(bn_stats_nodes=len(stats), bn_stats_rejected=rejected)
        if not stats:
            log(
                WARNING,
                "round %d: no BN statistics (%d nodes asked, need %.1f MB); the merged ones stay",
                server_round,
                len(msgs),
                need,
            )
            return
        pooled = pool_statistics(stats)
        self.model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in pooled.items()}, strict=False
        )

    def final_model(self) -> nn.Module:
        """The full-width global model."""
        return copy.deepcopy(self.model)


class FedRolex(HeteroFL):
    """HeteroFL with a rolling window: in round ``t`` channels ``t .. t+rC-1`` (mod C).

    Alam et al., NeurIPS 2022. Every channel of the server model is trained
    over time, also those no node could hold in a static nested window.
    """

    rolling = True

    def offset(self, server_round: int) -> int:
        """The window moves one channel per round and wraps around."""
        return server_round


class AllSmall(SubModelStrategy):
    """One width-scaled model the smallest known budget holds, trained by all (FedAvg).

    The width is the largest of ``method.ratios`` whose estimate fits the
    smallest budget discovered in the first round; it is then fixed for the
    run (nodes joining later with less memory are not eligible).
    """

    message_type = TRAIN_WIDTH

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.ratios = tuple(sorted({float(r) for r in mc.get("ratios", DEFAULT_RATIOS)}))[::-1]
        self.ratio: float | None = None
        super().__init__(**kwargs)

    def build_model(self) -> nn.Module:
        ratio = 1.0 if self.ratio is None else self.ratio
        return self._seeded(lambda: width_model(self.key, ratio))

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

    def discover_budgets(self, grid: Grid, server_round: int, timeout: float) -> None:
        """After the first budgets arrive, fix the width and build the model at it."""
        super().discover_budgets(grid, server_round, timeout)
        if self.ratio is None and self.budgets:
            self.fix_width()

    def fix_width(self) -> None:
        """Fix the width for the run from the budgets known now, and build the model at it."""
        self.ratio = self.choose_ratio()
        self._ladder = None
        self.model = self.build_model()
        self.detector.reset(self.block_params(self.key.spec().num_blocks - 1))
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

    label_mask = False  # plain FedAvg on one model: no masked classifier
    tier_config = HeteroFL.tier_config

    def merge(self, good: list[tuple[int, RecordDict]]) -> None:
        contents = [c for _, c in good]
        self.model.load_state_dict(merge_weighted(contents, self.model.state_dict()))

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
