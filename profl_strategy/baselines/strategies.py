"""The baselines as subclasses of :class:`~profl_strategy.strategy.ProFL`.

They reuse everything of ProFL that is not the method: budget discovery,
selection size (``fraction-train`` of the eligible nodes, at least
``min-train-nodes``), reply validation rules, the ``min-replies`` rule, the
round loop, evaluation, checkpoints and the results record. What changes is
which sub-model each node trains and how replies are merged:

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

import copy
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from torch import nn

from profl_strategy.baselines.depth import (
    DepthClassifier,
    DepthNet,
    DepthSubModel,
    depth_need_mb,
    heads_for,
    kd_ramp,
    key_map,
)
from profl_strategy.baselines.protocol import (
    TRAIN_DEPTH,
    TRAIN_WIDTH,
    depth_record,
    width_record,
)
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
from profl_strategy.memory import estimate_full
from profl_strategy.models import build_full_model
from profl_strategy.replies import merge_weighted, reply_problem
from profl_strategy.step_model import STAGE_FULL, Step
from profl_strategy.strategy import ProFL


@dataclass(frozen=True)
class Tier:
    """One sub-model size: a width ratio or a depth, and its estimated peak MB."""

    name: str
    value: float
    need_mb: float


@dataclass
class _Sent:
    """What one node was sent this round, to check and merge its reply."""

    tier: Tier
    shapes: dict[str, tuple[int, ...]]
    info: Any = None  # a slice plan (width) or a key map (depth)


@dataclass
class _Payload:
    arrays: ArrayRecord
    shapes: dict[str, tuple[int, ...]]
    info: Any = field(default=None)


def _to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
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
        self._expect: dict[int, _Sent] = {}
        self._ladder: list[Tier] | None = None

    # ---- what a subclass defines ------------------------------------------------
    def build_model(self) -> nn.Module:
        """The global state, initialised from the run seed."""
        raise NotImplementedError

    def make_ladder(self) -> list[Tier]:
        """Every sub-model size, largest first."""
        raise NotImplementedError

    def payload(self, tier: Tier, server_round: int) -> _Payload:
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
        k = min(len(eligible), max(int(len(eligible) * self.fraction_train), self.min_train_nodes))
        selected = sorted(self.rng.sample(eligible, k), key=self._order)
        payloads: dict[Tier, _Payload] = {}
        msgs, self._expect, down = [], {}, 0
        for n in selected:
            tier = tiers[n]
            if tier not in payloads:
                payloads[tier] = self.payload(tier, server_round)
            p = payloads[tier]
            cfg = self.tier_config(self.run_config, tier, server_round)
            cfg["enforce-budget"] = self.memory_aware
            self._expect[n] = _Sent(tier, p.shapes, p.info)
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

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate every reply, then let the method merge the valid ones."""
        good = self.screen_replies(replies)
        if good is None:
            return None, None
        self.merge(good)
        return self.round_metrics([c for _, c in good])

    def step_model(self, step: Step) -> nn.Module:  # noqa: ARG002 - one step only
        """What is evaluated every round: the deliverable global model."""
        return self.final_model()

    def _seeded(self, build: Any) -> nn.Module:
        """Build a module from the run seed without disturbing the global torch RNG."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return build()


# ---- width scaling -----------------------------------------------------------------
class HeteroFL(SubModelStrategy):
    """Static nested width tiers; every parameter entry averaged over the nodes holding it.

    Diao et al., ICLR 2021. A node of rate ``r`` trains channels ``0 .. r*C-1``
    of every layer. Options (``method``): ``ratios`` (model rates, default
    1, 1/2, 1/4, 1/8, 1/16) and ``label_mask`` (HeteroFL's masked classifier for
    non-IID data). Not reproduced: the "scaler" and static BatchNorm (sBN),
    which re-estimate BN statistics on training data at the server, which this
    app's server does not have; BN statistics are averaged per slice instead,
    like every other entry.
    """

    message_type = TRAIN_WIDTH
    rolling = False

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.ratios = tuple(sorted({float(r) for r in mc.get("ratios", DEFAULT_RATIOS)}))[::-1]
        if not self.ratios or not all(0 < r <= 1 for r in self.ratios):
            raise ValueError(f"method.ratios must lie in (0, 1], got {self.ratios}")
        self.label_mask = bool(mc.get("label_mask", False))
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

    def payload(self, tier: Tier, server_round: int) -> _Payload:
        plan = self.plan(tier.value, server_round)
        sub = slice_state(_to_numpy(self.model.state_dict()), plan)
        return _Payload(_record(sub), shapes_of(sub), plan)

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
        merged = aggregate_slices(_to_numpy(self.model.state_dict()), updates)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in merged.items()})

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

    def payload(self, tier: Tier, server_round: int) -> _Payload:
        state = _to_numpy(self.model.state_dict())
        return _Payload(_record(state), shapes_of(state))

    def tier_config(self, base: ConfigRecord, tier: Tier, server_round: int) -> ConfigRecord:
        return width_record(
            base,
            self.schedule.current,
            server_round,
            tier.need_mb,
            ratio=tier.value,
            label_mask=False,
        )

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


# ---- depth scaling -----------------------------------------------------------------
class DepthFL(SubModelStrategy):
    """Depth tiers: blocks ``0 .. k-1`` with a classifier after each, all trained.

    Kim et al., ICLR 2023, as DepthFL(FedAvg): parameters are averaged over the
    nodes holding them (FedDyn is not used, as for every method here). Options:
    ``kd`` (mutual self-distillation between the heads, with DepthFL's
    ramp-up over ``kd_rampup`` of the rounds) and ``ensemble`` (evaluate the
    mean of all heads instead of the deepest classifier).
    """

    message_type = TRAIN_DEPTH
    all_heads = True
    group_tops = False

    def __init__(self, **kwargs: Any) -> None:
        mc = dict(kwargs.get("method_config") or {})
        self.kd = bool(mc.get("kd", False))
        self.kd_rampup = float(mc.get("kd_rampup", 0.3))
        self.ensemble = bool(mc.get("ensemble", False))
        super().__init__(**kwargs)
        self.num_blocks = self.key.spec().num_blocks
        self._sub_shapes: dict[int, dict[str, tuple[int, ...]]] = {}

    def build_model(self) -> nn.Module:
        return self._seeded(lambda: DepthNet(self.key.spec(), self.group_tops))

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

    def payload(self, tier: Tier, server_round: int) -> _Payload:
        depth = int(tier.value)
        shapes = self.sub_shapes(depth)
        mapping = key_map(list(shapes), depth, self.num_blocks, self.group_tops)
        state = self.model.state_dict()
        sub = {k: state[g].detach().cpu().numpy() for k, g in mapping.items()}
        return _Payload(_record(sub), shapes, mapping)

    def kd_weight(self, server_round: int) -> float:
        """DepthFL's consistency weight this round (0 without self-distillation)."""
        if not self.kd:
            return 0.0
        return kd_ramp(server_round, self.kd_rampup * self.schedule.max_rounds())

    def tier_config(self, base: ConfigRecord, tier: Tier, server_round: int) -> ConfigRecord:
        depth = int(tier.value)
        return depth_record(
            base,
            self.schedule.current,
            server_round,
            tier.need_mb,
            depth=depth,
            heads=heads_for(depth, self.all_heads),
            kd_weight=self.kd_weight(server_round),
        )

    def merge(self, good: list[tuple[int, RecordDict]]) -> None:
        """Average each global key over the nodes whose sub-model holds it.

        Replies of one depth share their keys, so flwr's
        ``aggregate_arrayrecords`` averages each depth group; groups are then
        combined key by key, weighted by their examples.
        """
        groups: dict[int, list[tuple[int, RecordDict]]] = {}
        for node, content in good:
            groups.setdefault(int(self._expect[node].tier.value), []).append((node, content))
        sums: dict[str, np.ndarray] = {}
        weights: dict[str, float] = {}
        for _depth, members in sorted(groups.items()):
            mapping = self._expect[members[0][0]].info
            agg = aggregate_arrayrecords([c for _, c in members], "num-examples")
            w = sum(float(c["metrics"]["num-examples"]) for _, c in members)
            for k, a in agg.items():
                g = mapping[k]
                sums[g] = sums.get(g, 0.0) + w * np.asarray(a.numpy(), dtype=np.float64)
                weights[g] = weights.get(g, 0.0) + w
        state = self.model.state_dict()
        merged = {}
        for g, total in sums.items():
            value = total / weights[g]
            if state[g].dtype in (torch.int64, torch.int32):
                value = np.rint(value)
            merged[g] = torch.from_numpy(np.asarray(value)).to(state[g].dtype)
        self.model.load_state_dict(merged, strict=False)

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

    def merge(self, good: list[tuple[int, RecordDict]]) -> None:
        old = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        super().merge(good)
        self.distill(old)
