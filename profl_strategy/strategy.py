"""ProFL as a Flower strategy: memory-aware selection, per-step messages, per-block FedAvg.

The strategy owns the whole progressive state (the :class:`GlobalModel`: real
blocks, head, stage-1 stand-ins and output modules) and walks the
:class:`ProgressiveSchedule`. Each round it sends every selected node only the
arrays of the current step, aggregates what comes back key by key, and lets the
effective-movement detector decide when the active block has converged.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from torch import nn

from profl_strategy.condense import carry_forward, condense_into_output_module
from profl_strategy.feasibility import check_feasible
from profl_strategy.memory import ModelKey
from profl_strategy.movement import ConvergenceDetector, sampling_noise
from profl_strategy.plan_picker import PLAIN, PlanPicker
from profl_strategy.protocol import QUERY_BUDGET, TRAIN_STEP, step_record
from profl_strategy.replies import REFUSED, merge_weighted, reply_problem, weighted_mean
from profl_strategy.schedule import ProgressiveSchedule
from profl_strategy.step_model import STAGE_GROW, STAGE_SHRINK, GlobalModel, Step, StepModel

REASK_LEFT_OUT_ROUNDS = 10  # a node left out for want of a budget is asked again after this
Evaluator = Callable[[int, nn.Module], dict[str, float]]
RoundHook = Callable[[dict[str, Any]], None]


def _mb(value: float) -> str:
    """A budget for the log: two decimals at most, no trailing zeros (3, 9.5, 7.25)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") else f"{value:.2g}"


class ProFL(FedAvg):
    """Progressive training of a block-partitioned model under per-node memory budgets.

    Parameters
    ----------
    model_key : ModelKey
        Architecture and shapes; fixes the blocks and the memory estimates.
    schedule : ProgressiveSchedule
        Stage/step order and round caps.
    detector : ConvergenceDetector
        Effective-movement test on the active block.
    run_config : ConfigRecord
        Fixed part of every message (see :func:`protocol.run_record`).
    batch_size : int
        Local batch size; memory estimates are made for it.
    fraction_train, min_train_nodes : float, int
        Share of the eligible nodes selected per round, and the least number
        selected when that many are eligible.
    seed : int
        Seeds node sampling.
    memory_aware : bool
        Select only nodes whose budget holds the step. False gives the
        unconstrained FedAvg upper bound (clients then skip their own check).
    method_config : dict, optional
        The composed ``method`` config group, for subclasses (baselines) that
        need options of their own.
    min_replies : int
        Usable replies a round needs. With fewer, the global model is left
        unchanged and the round does not count towards the step (it is, in
        effect, retried next round); it still counts towards ``num_rounds``.
    """

    def __init__(
        self,
        *,
        model_key: ModelKey,
        schedule: ProgressiveSchedule,
        detector: ConvergenceDetector,
        run_config: ConfigRecord,
        batch_size: int,
        fraction_train: float,
        min_train_nodes: int,
        seed: int,
        eval_every: int = 1,
        memory_aware: bool = True,
        min_replies: int = 1,
        method_config: dict[str, Any] | None = None,
        on_round: RoundHook | None = None,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=min_train_nodes,
            min_available_nodes=1,
        )
        self.key, self.schedule, self.detector = model_key, schedule, detector
        self.run_config, self.batch_size = run_config, batch_size
        self.rng = random.Random(seed)
        self.on_round, self.eval_every = on_round, eval_every
        self.memory_aware, self.min_replies = memory_aware, min_replies
        self.method_config = dict(method_config or {})
        self.plans = PlanPicker(
            model_key,
            batch_size,
            str(self.method_config.get("plans", "off")),
            int(self.method_config.get("plans_min_micro_batch", 4)),
        )
        torch.manual_seed(seed)
        self.model = GlobalModel(model_key.spec(), model_key.out_depth)
        self.budgets: dict[int, float] = {}
        self.budget_sources: dict[int, str] = {}
        self.partition_ids: dict[int, int] = {}
        # node -> (round asked, why): nodes without a usable budget (bad node-config,
        # failed budget query), not selected and not asked every round
        self.left_out: dict[int, tuple[int, str]] = {}
        self._online_before: set[int] | None = None
        self.history: list[dict[str, Any]] = []
        self.refusals = 0
        self.server_round = 0
        self._dst: dict[str, int] = {}  # message id -> node id, for SuperLink errors
        self._step_started: Step | None = None
        self._round_noise = 0.0  # sampling variance of the last merged step (denoised EM)
        self._sent_keys: list[str] = []
        self._last: dict[str, Any] = {}

    # ---- the pieces of one round -------------------------------------------------
    def need_mb(self, step: Step) -> float:
        """Estimated peak memory of training ``step`` without a plan."""
        return self.plans.plain_mb(step)

    def remaining_needs(self) -> dict[str, float]:
        """Estimated peak MB of every step still to train, for :func:`check_feasible`.

        With plans, a step needs what the largest node's plan needs, or, if no
        plan fits that node, the least any plan needs.
        """
        largest = max(self.budgets.values(), default=0.0)
        needs = {}
        for s in self.schedule.steps[self.schedule.index :]:
            fit = self.plans.fit(s, largest)
            needs[str(s)] = fit[1] if fit else self.plans.lowest_mb(s)
        return needs

    def step_keys(self, step: Step) -> tuple[list[str], list[str]]:
        """All state keys of a step's sub-model, and those it trains."""
        sub = StepModel(self.key.spec(), step, self.key.out_depth)
        return list(sub.state_dict()), sub.trainable_keys()

    def block_params(self, t: int) -> torch.Tensor:
        """The active block's parameters as one vector, for effective movement."""
        return nn.utils.parameters_to_vector(self.model.blocks[t].parameters()).detach()

    def discover_budgets(self, grid: Grid, server_round: int, timeout: float) -> None:
        """Ask online nodes the strategy has no budget for (or that reconnected) for one.

        A node whose node-config the run cannot use (the ClientApp answers
        ``config-error``), or whose query fails, is logged once and left out: it
        is asked again only every :data:`REASK_LEFT_OUT_ROUNDS` rounds or when it
        reconnects, so a node restarted with a fixed config rejoins without a
        query every round. A node that went offline and came back is asked again,
        as it may have restarted with another ``memory-mb``.
        """
        online = list(grid.get_node_ids())
        back = set(online) - self._online_before if self._online_before is not None else set()
        self._online_before = set(online)
        ask = [
            n
            for n in online
            if n in back
            or (n not in self.budgets and n not in self.left_out)
            or (n in self.left_out and server_round - self.left_out[n][0] >= REASK_LEFT_OUT_ROUNDS)
        ]
        if not ask:
            return
        for n in ask:  # the next question in REASK_LEFT_OUT_ROUNDS, answered or not
            if n in self.left_out:
                self.left_out[n] = (server_round, self.left_out[n][1])
        msgs = [
            Message(
                RecordDict({"config": ConfigRecord(dict(self.run_config))}),
                dst_node_id=n,
                message_type=QUERY_BUDGET,
                group_id=str(server_round),
                ttl=timeout,
            )
            for n in ask
        ]
        replies = list(grid.send_and_receive(msgs, timeout=timeout))
        # An error the SuperLink wrote (node gone) does not come from the node itself.
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
        for reply in replies:
            nid = dst.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            why = self._budget_problem(reply)
            if why:
                self._leave_out(nid, server_round, why)
                continue
            if self.left_out.pop(nid, None):
                log(INFO, "node %s now states a usable budget and joins the run", nid)
            m = reply.content["metrics"]
            self.budgets[nid] = float(m["memory-mb"])
            self.partition_ids[nid] = int(m.get("partition-id", -1))
            source = reply.content.config_records.get("config", ConfigRecord()).get("source")
            self.budget_sources[nid] = str(source)
        log(INFO, "budgets known for %s", self.budget_summary(online))

    def _leave_out(self, node: int, server_round: int, why: str) -> None:
        """Leave a node without a usable budget out; log why once, not every time it is asked."""
        self.budgets.pop(node, None)
        if self.left_out.get(node, (0, ""))[1] != why:
            log(
                WARNING,
                "node %s is left out of the run (asked again in %d rounds or when it "
                "reconnects): %s",
                node,
                REASK_LEFT_OUT_ROUNDS,
                why,
            )
        self.left_out[node] = (server_round, why)

    @staticmethod
    def _budget_problem(reply: Message) -> str | None:
        """Why a budget reply gives no usable budget (the node's own words if it says), or None."""
        if reply.has_error():
            return f"budget query failed: {reply.error.reason}"
        content = reply.content
        if "config" in content.config_records and "config-error" in content["config"]:
            return str(content["config"]["config-error"])
        metrics = content.metric_records.get("metrics")
        mb = metrics.get("memory-mb") if metrics is not None else None
        if not isinstance(mb, int | float) or not math.isfinite(mb):
            return (
                f"its budget reply has memory-mb={mb!r}, not a finite number of MB; "
                "check the node's --node-config memory-mb"
            )
        return None

    def budget_summary(self, online: Iterable[int] | None = None) -> str:
        """``N online nodes: budgets in MB, smallest first``, and how many are offline or out.

        Only nodes in ``online`` (all known nodes when None) are counted and
        listed; budgets keep two decimals (9.5 stays 9.5), repeats are counted.
        """
        now = set(self.budgets if online is None else online)
        counts = Counter(b for n, b in self.budgets.items() if n in now)
        listed = ", ".join(
            f"{_mb(b)}" + (f" (x{c})" if c > 1 else "") for b, c in sorted(counts.items())
        )
        text = f"{sum(counts.values())} online nodes: {listed or 'none'} MB"
        offline = sum(n not in now for n in self.budgets)
        refused = sum(n in now for n in self.left_out)
        if offline:
            text += f"; {offline} offline, not counted"
        if refused:
            text += f"; {refused} left out (no usable budget)"
        return text

    def fits(self, step: Step, nodes: Iterable[int]) -> dict[int, tuple[str, float] | None]:
        """Per node with a known budget: ``(plan, estimated peak MB)`` for ``step``, or None."""
        need = self.need_mb(step)
        return {
            n: self.plans.fit(step, self.budgets[n]) if self.memory_aware else (PLAIN, need)
            for n in nodes
            if n in self.budgets
        }

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Select eligible nodes and send each the arrays of the current step.

        A node is eligible if some plan (plain training when plans are off) fits
        its budget; its message names that plan and the plan's estimated peak.
        """
        step = self.schedule.current
        need = self.need_mb(step)
        online = set(grid.get_node_ids())
        fits = self.fits(step, online)
        eligible = sorted((n for n, fit in fits.items() if fit), key=self._order)
        k = self.selection_size(len(online), len(eligible))
        selected = sorted(self.rng.sample(eligible, k), key=self._order)
        keys, self._sent_keys = self.step_keys(step)
        sub = ArrayRecord({k_: arrays[k_] for k_ in keys})
        self._last = {
            "eligible": len(eligible),
            "selected": len(selected),
            "online": len(online),
            "need_mb": need,
            "bytes_down": sub.count_bytes() * len(selected),
            "selected_nodes": [
                {
                    "node": n,
                    "partition": self.partition_ids.get(n, -1),
                    "budget_mb": self.budgets[n],
                    "plan": fits[n][0],
                    "plan_need_mb": fits[n][1],
                }
                for n in selected
            ],
            "plans": dict(Counter(fits[n][0] for n in selected)),
        }
        msgs = []
        for n in selected:
            label, plan_need = fits[n]
            cfg = step_record(self.run_config, step, server_round, plan_need)
            cfg["enforce-budget"] = self.memory_aware
            if self.plans.enabled:
                cfg["plan"] = label
            msgs.append(
                Message(
                    RecordDict({"arrays": sub, "config": cfg}),
                    dst_node_id=n,
                    message_type=TRAIN_STEP,
                    group_id=str(server_round),
                )
            )
        return msgs

    def selection_size(self, online: int, eligible: int) -> int:
        """Nodes a round trains: ``fraction-train`` of the nodes online (at least
        ``min-train-nodes``), as many as are eligible.

        The same rule for every method, so ProFL's small steps and the
        baselines' whole models see the same number of nodes a round.
        """
        return min(eligible, max(int(online * self.fraction_train), self.min_train_nodes))

    def _order(self, node_id: int) -> tuple[int, int]:
        """Stable node order (partition id first), so a seed fixes selection and sums."""
        return self.partition_ids.get(node_id, -1), node_id

    def _node_of(self, reply: Message) -> int:
        """The node a reply is about, also for errors the SuperLink wrote."""
        return self._dst.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def _refresh_budget(self, node: int, reply: Message) -> None:
        """Take the budget a reply states: a node may restart with another ``memory-mb``."""
        if reply.has_content() and "metrics" in reply.content.metric_records:
            mb = reply.content["metrics"].get("memory-mb")
            if isinstance(mb, int | float) and mb > 0 and node in self.budgets:
                self.budgets[node] = float(mb)

    def _valid(self, reply: Message) -> str | None:
        """Why a train reply cannot be aggregated, or None if it can."""
        return reply_problem(reply, self._sent_keys, self.model.state_dict())

    def screen_replies(self, replies: Iterable[Message]) -> list[tuple[int, RecordDict]] | None:
        """Usable replies as ``(node, content)`` in a fixed order; None if too few.

        Refusals and rejected replies are counted and logged with the node id;
        they never reach the global model.
        """
        good: list[tuple[int, RecordDict]] = []
        stats = {"refused": 0, "rejected": 0, "replies": 0}
        plans_used: Counter[str] = Counter()
        peak_measured, bytes_up = 0.0, 0
        for reply in replies:
            node = self._node_of(reply)
            self._refresh_budget(node, reply)
            stats["replies"] += 1
            why = self._valid(reply)
            if why == REFUSED:
                stats["refused"] += 1
                m = reply.content["metrics"]
                log(
                    WARNING,
                    "node %s refused: needs %.1f MB, budget %.1f MB",
                    node,
                    m["need-mb"],
                    m["memory-mb"],
                )
            elif why:
                stats["rejected"] += 1
                log(WARNING, "reply of node %s rejected: %s", node, why)
            else:
                good.append((node, reply.content))
                if "plan" in reply.content.config_records:
                    plans_used[str(reply.content["plan"]["label"])] += 1
                bytes_up += reply.content["arrays"].count_bytes()
                peak = float(reply.content["metrics"].get("peak-mb-measured", 0.0))
                peak_measured = max(peak_measured, peak)
        self.refusals += stats["refused"]
        self._last.update(
            stats,
            bytes_up=bytes_up,
            peak_mb_measured=peak_measured,
            aggregated=len(good),
            plans_used=dict(plans_used),
        )
        if len(good) < self.min_replies:
            return None
        # Sum in a fixed order: float addition is not associative, and replies
        # arrive in any order.
        return sorted(good, key=lambda item: self._order(item[0]))

    def round_metrics(self, contents: list[RecordDict]) -> tuple[ArrayRecord, MetricRecord]:
        """The updated global arrays and the example-weighted training loss."""
        loss = weighted_mean(contents, "train-loss")
        n = sum(float(c["metrics"]["num-examples"]) for c in contents)
        self._last["train_loss"] = loss
        return ArrayRecord(self.model.state_dict()), MetricRecord(
            {"train-loss": loss, "num-examples": n}
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies, fold the usable ones into the model (:meth:`merge`)."""
        good = self.screen_replies(replies)
        if good is None:
            return None, None
        self.merge(good)
        return self.round_metrics([c for _, c in good])

    def merge(self, good: list[tuple[int, RecordDict]]) -> None:
        """Weighted FedAvg of the active step's arrays; the model stays whole."""
        contents = [c for _, c in good]
        self._round_noise = self.block_noise(contents)
        self.model.load_state_dict(merge_weighted(contents, self.model.state_dict()), strict=False)

    def block_noise(self, contents: list[RecordDict]) -> float:
        """Client-sampling variance of this round's step of the active block (denoised EM)."""
        if self.detector.variant != "denoised":
            return 0.0
        t = self.schedule.current.block
        names = [f"blocks.{t}.{n}" for n, _ in self.model.blocks[t].named_parameters()]
        updates = [
            torch.cat([torch.from_numpy(c["arrays"][k].numpy()).flatten() for k in names])
            for c in contents
        ]
        weights = [float(c["metrics"]["num-examples"]) for c in contents]
        return sampling_noise(updates, weights)

    # ---- the progressive loop ---------------------------------------------------
    def after_merge(self, grid: Grid, server_round: int, timeout: float) -> None:
        """Run after a round's update is merged; HeteroFL/FedRolex refresh BN statistics."""

    def _enter_step(self, step: Step) -> None:
        """Prepare a step: fold the trained block into the next output module."""
        last = self.key.spec().num_blocks - 1
        if step.stage == STAGE_SHRINK and step.block < last:
            copied = condense_into_output_module(self.model, step.block)
            log(
                INFO,
                "stage 1: output module of block %d initialised from block %d (%d layers)",
                step.block,
                step.block + 1,
                copied,
            )
        if step.stage == STAGE_GROW and step.block > 0 and self.method_config.get("carry_forward"):
            copied = carry_forward(self.model, step.block, block_trained=self.schedule.shrinks)
            log(INFO, "stage 2: step %s starts from step %s's output module (%d layers)",
                step, Step(STAGE_GROW, step.block - 1), copied)  # fmt: skip
        self.detector.reset(self.block_params(step.block))
        self._step_started = step

    def wait_for_nodes(self, grid: Grid, minimum: int, timeout: float) -> None:
        """Block until ``minimum`` nodes are online (deployment nodes connect late)."""
        deadline = time.monotonic() + timeout
        while len(list(grid.get_node_ids())) < minimum and time.monotonic() < deadline:
            time.sleep(1.0)

    def train_round(self, grid: Grid, server_round: int, timeout: float) -> dict[str, Any]:
        """One round of the current step: select, send, aggregate, test convergence."""
        step = self.schedule.current
        if step != self._step_started:
            self._enter_step(step)
        self.discover_budgets(grid, server_round, timeout)
        arrays = ArrayRecord(self.model.state_dict())
        msgs = list(self.configure_train(server_round, arrays, ConfigRecord(), grid))
        for m in msgs:
            # A message nobody picked up within the round is dropped by the
            # SuperLink instead of piling up behind later rounds.
            m.metadata.ttl = timeout
        em, transition = None, None
        if not msgs:
            log(
                WARNING,
                "round %d: no node can hold step %s (needs %.1f MB; budgets of %s); "
                "the step is skipped",
                server_round,
                step,
                self._last["need_mb"],
                self.budget_summary(grid.get_node_ids()),
            )
            transition = self.schedule.skip("no-eligible-node")
        else:
            replies = list(grid.send_and_receive(msgs, timeout=timeout))
            self._dst = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
            agg, _ = self.aggregate_train(server_round, replies)
            if agg is None:
                log(
                    WARNING,
                    "round %d: %d usable replies (< %d); global model unchanged, "
                    "round not counted for step %s",
                    server_round,
                    self._last["aggregated"],
                    self.min_replies,
                    step,
                )
            else:
                self.after_merge(grid, server_round, timeout)
                em = self.detector.update(self.block_params(step.block), self._round_noise)
                transition = self.schedule.record_round(self.detector.converged)
        record = {
            "round": server_round,
            "stage": step.stage,
            "block": step.block,
            "em": em,
            **self._last,
        }
        if self.detector.variant == "denoised":
            record["sampling_noise"] = self._round_noise
        if transition:
            record["transition"] = {
                "reason": transition.reason,
                "rounds": transition.rounds,
                "next": str(transition.next) if transition.next else None,
            }
            log(
                INFO,
                "step %s ended after %d rounds (%s); next: %s",
                transition.finished,
                transition.rounds,
                transition.reason,
                transition.next or "done",
            )
        return record

    def start(  # type: ignore[override]
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int = 200,
        timeout: float = 600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Evaluator | None = None,
    ) -> Result:
        """Run both stages until the schedule ends or ``num_rounds`` is reached.

        Continues from ``self.server_round`` after :meth:`load_state_dict`.
        """
        if initial_arrays is not None:
            self.model.load_state_dict(initial_arrays.to_torch_state_dict())
        log(
            INFO,
            "%s: %d blocks, steps %s, at most %d rounds, from round %d",
            self.method_config.get("name", "profl"),
            self.key.spec().num_blocks,
            " ".join(map(str, self.schedule.steps)),
            min(num_rounds, self.schedule.max_rounds()),
            self.server_round + 1,
        )
        self.wait_for_nodes(grid, self.min_train_nodes, timeout)
        if self.memory_aware and not self.schedule.done:
            self.discover_budgets(grid, self.server_round, timeout)
            check_feasible(self.remaining_needs(), self.budgets.values(), self.batch_size)
        result = Result()
        while self.server_round < num_rounds and not self.schedule.done:
            self.server_round += 1
            t0 = time.monotonic()
            step = self.schedule.current
            record = self.train_round(grid, self.server_round, timeout)
            due = self.server_round % self.eval_every == 0 or "transition" in record
            if evaluate_fn and (due or self.schedule.done):
                model = self.final_model() if self.schedule.done else self.step_model(step)
                record.update(evaluate_fn(self.server_round, model))
                result.evaluate_metrics_serverapp[self.server_round] = MetricRecord(
                    {k: float(record[k]) for k in ("accuracy", "loss")}
                )
            record["round_s"] = time.monotonic() - t0
            self.history.append(record)
            if self.on_round:
                self.on_round(record)
        result.arrays = ArrayRecord(self.model.state_dict())
        return result

    # ---- checkpoints --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run after a crash."""
        return {
            "model": self.model.state_dict(),
            "schedule": self.schedule.state_dict(),
            "detector": self.detector.state_dict(),
            "step_started": self._step_started,
            "server_round": self.server_round,
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "refusals": self.refusals,
            "budgets_by_partition": {
                self.partition_ids.get(n, -1): b for n, b in self.budgets.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. Budgets are asked again: node ids change."""
        self.model.load_state_dict(state["model"])
        self.schedule.load_state_dict(state["schedule"])
        self.detector.load_state_dict(state["detector"])
        self._step_started = state["step_started"]
        self.server_round = int(state["server_round"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.refusals = int(state["refusals"])

    def step_model(self, step: Step) -> nn.Module:
        """The current step's sub-model with the global weights (for evaluation)."""
        sub = StepModel(self.key.spec(), step, self.key.out_depth)
        state = self.model.state_dict()
        sub.load_state_dict({k: state[k] for k in sub.state_dict()})
        return sub

    def final_model(self) -> nn.Module:
        """The deliverable model: real blocks and head."""
        from profl_strategy.models import build_full_model

        full = build_full_model(self.key.spec())
        state = self.model.state_dict()
        full.load_state_dict({k: state[k] for k in full.state_dict()})
        return full
