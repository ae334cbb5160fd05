"""The strategy engine: what every method of the comparison shares.

A method (ProFL, the full-model, width and depth baselines; all in
:mod:`profl_strategy.methods`) subclasses :class:`Engine` and answers three
questions: what to train this round (its :class:`~profl_strategy.engine.method.Schedule`'s
``current`` step, then :meth:`Engine.plan_round`, which returns a :class:`RoundPlan`),
whether the run is done (``schedule.done``), and which model it delivers
(:meth:`Engine.final_model`). It may also say how to fold what came back into its
global model (:meth:`Engine.apply`, by default a key-by-key weighted mean) and when
a step has converged (:meth:`Engine.converged`). This module imports no method.
The engine does the rest, the same way for all: budgets (:class:`NodeBook`),
memory-aware selection, messages with one TTL rule, reply screening, the
``min-replies`` rule, the round loop, server-side evaluation, checkpoint state
and the per-round log record.

Flower's ``Strategy`` contract: :meth:`start` has Flower's signature and returns a
filled ``Result``; it runs its own round loop (:meth:`train_round`), which plans,
sends and screens a round in one place, so Flower's ``configure_*`` and
``aggregate_*`` hooks are not used. Departures, on purpose: no federated evaluation
(the server scores the global model on the held-out test split and on its validation
split, ``val-fraction`` of the training split that no node trains on), and
``evaluate_fn`` receives the module to score, since what is scored (a ProFL step's
sub-model) changes architecture between steps.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable
from logging import ERROR, INFO, WARNING
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from torch import nn

from profl_strategy.engine.feasibility import check_feasible
from profl_strategy.engine.merge import merge_updates
from profl_strategy.engine.method import Schedule, Transition
from profl_strategy.engine.nodes import NodeBook
from profl_strategy.engine.protocol import ARRAYS, CONFIG, NUM_EXAMPLES, RunSpec
from profl_strategy.engine.round_failures import NodeErrors, errors_once, stop_reason
from profl_strategy.engine.rounds import Assignment, RoundOutcome, RoundPlan, screen
from profl_strategy.engine.step import Step
from profl_strategy.engine.tail import TailAverage

Evaluator = Callable[[int, nn.Module], dict[str, float]]
RoundHook = Callable[[dict[str, Any]], None]

__all__ = ["Assignment", "Engine", "RoundOutcome", "RoundPlan"]


class Engine(FedAvg):
    """Memory-aware federated rounds over a method's sub-models.

    Parameters
    ----------
    run : RunSpec
        The part of every message that is fixed for the run (model, data,
        training, memory profile).
    schedule : Schedule
        Steps and round caps (:class:`~profl_strategy.engine.method.Schedule`): what
        each round trains and when the run is done. ProFL's is its progressive
        schedule; a baseline's is one full-model step
        (:class:`~profl_strategy.engine.fixed_schedule.FixedSchedule`).
    fraction_train, min_train_nodes : float, int
        A round trains ``fraction_train`` of the online nodes, at least
        ``min_train_nodes``, at most the eligible ones (:meth:`selection_size`).
    seed : int
        Seeds node sampling and the initial model.
    memory_aware : bool
        Select only nodes whose budget holds their order. False gives the
        references that ignore memory (nodes then skip their own check).
    min_replies : int
        Usable replies a round needs; with fewer, the model is left unchanged
        and the round does not count towards the step.
    method_config : dict, optional
        The composed ``method`` config group, for options of a method.
    final_average : int
        Deliver the mean of the deliverable models of the last ``final_average``
        rounds (:class:`TailAverage`); 0 delivers the last round's model.

    Attributes
    ----------
    takes_detector : bool
        Class-level: True when the constructor also takes ``detector``, a convergence
        test built from the config's ``method.em`` (ProFL's effective movement). The run
        layer reads it to build one, so it names no method; the engine never uses it.
    """

    takes_detector: ClassVar[bool] = False

    def __init__(
        self,
        *,
        run: RunSpec,
        schedule: Schedule,
        fraction_train: float,
        min_train_nodes: int,
        seed: int,
        eval_every: int = 1,
        memory_aware: bool = True,
        min_replies: int = 1,
        method_config: dict[str, Any] | None = None,
        on_round: RoundHook | None = None,
        final_average: int = 0,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=min_train_nodes,
            min_available_nodes=1,
            weighted_by_key=NUM_EXAMPLES,
            arrayrecord_key=ARRAYS,
            configrecord_key=CONFIG,
        )
        self.run, self.key, self.schedule = run, run.model, schedule
        self.batch_size, self.seed = run.train.batch_size, seed
        self.rng = random.Random(seed)
        self.eval_every, self.on_round = eval_every, on_round
        self.memory_aware, self.min_replies = memory_aware, min_replies
        self.method_config = dict(method_config or {})
        self.nodes = NodeBook(run)
        self.model: nn.Module = nn.Module()
        self.history: list[dict[str, Any]] = []
        self.refusals = 0
        self.errors = NodeErrors()  # the nodes' error replies, each distinct one logged once
        self.stopped: str | None = None  # why the run stopped before its schedule ended
        self.server_round = 0
        self.round_timeout = 600.0
        self.deadline: float | None = None  # time.monotonic(): no round starts after it
        self.tail = TailAverage(final_average) if final_average > 0 else None

    # ---- what a method defines ------------------------------------------------------
    def plan_round(self, server_round: int, online: set[int]) -> RoundPlan:
        """Who trains what this round (selection included, see :meth:`select`)."""
        raise NotImplementedError

    def apply(self, plan: RoundPlan, outcome: RoundOutcome) -> None:
        """Fold the usable replies into the global model: :func:`merge_updates`."""
        state = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        merged = merge_updates(state, outcome.updates())
        current = self.model.state_dict()
        self.model.load_state_dict(
            {k: torch.from_numpy(np.asarray(v)).to(current[k].dtype) for k, v in merged.items()},
            strict=False,
        )

    def after_merge(self, grid: Grid, plan: RoundPlan, outcome: RoundOutcome) -> dict[str, Any]:
        """Work after a merge; returns fields for the round log."""
        return {}

    def refresh(self, grid: Grid) -> dict[str, Any]:
        """Bring what is derived from the global model up to date before the model is
        read (scored, averaged or delivered): HeteroFL's static BN statistics, which
        only a read needs. Returns fields for the round log."""
        return {}

    def converged(self, plan: RoundPlan, outcome: RoundOutcome) -> tuple[bool, dict[str, Any]]:
        """Whether the current step has converged after this merge, and log fields."""
        return False, {}

    def remaining_needs(self) -> dict[str, float]:
        """Estimated peak MB of what is left to train, for :func:`check_feasible`."""
        return {}

    def eval_model(self, step: Step) -> nn.Module:  # noqa: ARG002 - ProFL's depends on it
        """What is scored after a round that trained ``step`` (by default the deliverable
        model)."""
        return self.final_model()

    def final_model(self) -> nn.Module:
        """The deliverable global model."""
        raise NotImplementedError

    def memory_summary(self) -> dict[str, Any]:
        """The method's own memory figures for ``results.json``."""
        return {}

    def deliverable(self) -> nn.Module:
        """What the run hands out: :meth:`final_model`, averaged over the last
        ``final_average`` rounds when that is set (:class:`TailAverage`)."""
        model = self.final_model()
        mean = self.tail.average() if self.tail is not None else None
        if mean is None or mean.keys() != model.state_dict().keys():
            return model
        model = copy.deepcopy(model)  # a baseline's final model is its live global model
        model.load_state_dict(mean)
        return model

    # ---- shared pieces --------------------------------------------------------------
    @property
    def budgets(self) -> dict[int, float]:
        return self.nodes.budgets

    def selection_size(self, online: int, eligible: int) -> int:
        """``fraction-train`` of the nodes online (at least ``min-train-nodes``), as many
        as are eligible: the same rule for every method."""
        return min(eligible, max(int(online * self.fraction_train), self.min_train_nodes))

    def select(self, eligible: Iterable[int], online: set[int]) -> list[int]:
        """A seeded sample of the eligible nodes, in stable node order."""
        pool = sorted(eligible, key=self.nodes.order)
        k = self.selection_size(len(online), len(pool))
        return sorted(self.rng.sample(pool, k), key=self.nodes.order)

    def discover(self, grid: Grid, server_round: int, timeout: float) -> None:
        """Ask the nodes without a known budget for one (:meth:`NodeBook.discover`)."""
        self.nodes.discover(grid, server_round, timeout)

    def wait_for_nodes(self, grid: Grid, minimum: int, timeout: float) -> None:
        """Block until ``minimum`` nodes are online (deployment nodes connect late)."""
        deadline = time.monotonic() + timeout
        while len(list(grid.get_node_ids())) < minimum and time.monotonic() < deadline:
            time.sleep(1.0)

    # ---- Flower's Strategy contract -------------------------------------------------
    def summary(self) -> None:
        """Log the method and how rounds are run (Flower calls this before the first round)."""
        log(
            INFO,
            "%s: %d blocks, steps %s, fraction-train %g, min-train-nodes %d, min-replies %d, "
            "memory-aware %s, from round %d",
            self.method_config.get("name", type(self).__name__.lower()),
            self.key.spec().num_blocks,
            " ".join(map(str, self.schedule.steps)),
            self.fraction_train,
            self.min_train_nodes,
            self.min_replies,
            self.memory_aware,
            self.server_round + 1,
        )

    def on_overrun(self, node: int, sent: Assignment) -> None:
        """A node's guard stopped ``sent`` over its budget; methods that can avoid
        handing it the same order again do so (ProFL: that step and plan)."""

    # ---- the round loop -------------------------------------------------------------
    def _merge(self, plan: RoundPlan, outcome: RoundOutcome) -> bool:
        """Apply a round's replies if there are enough; count its refusals."""
        self.refusals += outcome.refused
        for node, sent in outcome.overruns:
            self.on_overrun(node, sent)
        if len(outcome.good) < self.min_replies:
            return False
        self.apply(plan, outcome)
        return True

    def train_round(self, grid: Grid, server_round: int, timeout: float) -> dict[str, Any]:
        """One round: budgets, plan, send, screen, merge, convergence; its log record."""
        step = self.schedule.current
        self.begin_round(step)
        self.discover(grid, server_round, timeout)
        plan = self.plan_round(server_round, set(grid.get_node_ids()))
        messages = list(plan.messages(self.round_timeout))
        record: dict[str, Any] = {
            "round": server_round,
            "stage": step.stage,
            "block": step.block,
            "em": None,
        }
        transition: Transition | None = None
        if not messages:
            log(WARNING, "round %d: no node can hold step %s (needs %.1f MB; budgets of %s); "
                "the step is skipped", server_round, step, plan.need_mb,
                self.nodes.summary(grid.get_node_ids()))  # fmt: skip
            transition = self.schedule.skip("no-eligible-node")
            record |= plan.log()
        else:
            replies = list(grid.send_and_receive(messages, timeout=timeout))
            outcome = screen(plan, replies, self.nodes, self.errors)
            record |= plan.log() | outcome.log()
            if self._merge(plan, outcome):
                record["train_loss"] = outcome.train_loss()
                record |= self.after_merge(grid, plan, outcome)
                done, fields = self.converged(plan, outcome)
                record |= fields
                transition = self.schedule.record_round(done)
            else:
                log(WARNING, "round %d: %d usable replies (< %d); global model unchanged, "
                    "round not counted for step %s", server_round, len(outcome.good),
                    self.min_replies, step)  # fmt: skip
        if transition:
            record["transition"] = transition.record()
            log(INFO, "step %s ended after %d rounds (%s); next: %s", transition.finished,
                transition.rounds, transition.reason, transition.next or "done")  # fmt: skip
        return record

    def begin_round(self, step: Any) -> None:
        """Prepare the round's step (ProFL enters a new step here)."""

    def start(  # type: ignore[override]  # scores an nn.Module, not an ArrayRecord
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int = 200,
        timeout: float = 600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Evaluator | None = None,
    ) -> Result:
        """Run until the schedule ends or ``num_rounds`` is reached; continues from
        ``self.server_round`` after :meth:`load_state_dict`."""
        if initial_arrays is not None:
            self.model.load_state_dict(initial_arrays.to_torch_state_dict())
        self.round_timeout = timeout
        self.summary()
        self.wait_for_nodes(grid, self.min_train_nodes, timeout)
        if not self.schedule.done and (online := len(list(grid.get_node_ids()))):
            from profl_strategy.task.partition_check import check_partitions  # data stack

            check_partitions(self.run.data, online, self.run.seed)  # one partition a node
        if self.memory_aware and not self.schedule.done:
            self.discover(grid, self.server_round, timeout)
            check_feasible(self.remaining_needs(), self.budgets.values(), self.batch_size)
        result = Result()
        with errors_once():  # Flower logs every failed ClientApp call: each error once
            while self.server_round < num_rounds and not self.schedule.done and self._going_on():
                self._round(grid, timeout, evaluate_fn, result)
        if self.history:  # the last round may not have been read (a time box, no scoring)
            self.history[-1].update(self.refresh(grid))
        result.arrays = ArrayRecord(self.deliverable().state_dict())
        return result

    def _round(
        self, grid: Grid, timeout: float, evaluate_fn: Evaluator | None, result: Result
    ) -> None:
        """The next round, scored when due, into ``history`` and ``result``."""
        self.server_round += 1
        t0 = time.monotonic()
        step = self.schedule.current
        record = self.train_round(grid, self.server_round, timeout)
        if "train_loss" in record:
            result.train_metrics_clientapp[self.server_round] = MetricRecord(
                {"train-loss": record["train_loss"]}
            )
        due = self.server_round % self.eval_every == 0 or "transition" in record
        scored = evaluate_fn is not None and (due or self.schedule.done)
        if scored or self.tail is not None:
            record |= self.refresh(grid)
        if scored and evaluate_fn is not None:
            scores = evaluate_fn(self.server_round, self.eval_model(step))
            record.update(scores)  # test, and validation where the evaluator has a split
            result.evaluate_metrics_serverapp[self.server_round] = MetricRecord(
                {k: float(v) for k, v in scores.items()}
            )
        if self.tail is not None:
            self.tail.push(self.final_model())
        record["round_s"] = time.monotonic() - t0
        self.history.append(record)
        if self.on_round:
            self.on_round(record)
        self.stopped = stop_reason(self.history, self.errors)  # rounds in a row unused
        if self.stopped:
            log(ERROR, "stopping after round %d: %s", self.server_round, self.stopped)

    def _going_on(self) -> bool:
        """Whether a round may start: not once ``stopped``, nor after the time box."""
        if self.stopped:
            return False
        if self.deadline is None or time.monotonic() < self.deadline:
            return True
        log(INFO, "time box reached after round %d: stopping", self.server_round)
        return False

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run after a crash (budgets are asked again)."""
        return {
            "model": self.model.state_dict(),
            "schedule": self.schedule.state_dict(),
            "server_round": self.server_round,
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "refusals": self.refusals,
            "tail": None if self.tail is None else self.tail.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`. Budgets are asked again: node ids change."""
        self.model.load_state_dict(state["model"])
        self.schedule.load_state_dict(state["schedule"])
        self.server_round = int(state["server_round"])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history = list(state["history"])
        self.refusals = int(state["refusals"])
        if self.tail is not None and state.get("tail"):
            self.tail.load_state_dict(state["tail"])
