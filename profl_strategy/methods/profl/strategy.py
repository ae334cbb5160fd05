"""ProFL as a method of the strategy engine: per-step orders, per-block merge, EM steps.

The method owns the whole progressive state (the :class:`GlobalModel`: real
blocks, head, stage-1 stand-ins and output modules) and walks the
:class:`ProgressiveSchedule`. Each round it sends every selected node only the
arrays of the current step (and the plan that fits the node's budget), merges
what comes back key by key, and lets the effective-movement detector decide
when the active block has converged. Everything else is the engine's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any, ClassVar

import torch
from flwr.app import ArrayRecord
from flwr.common import log
from torch import nn

from profl_strategy.engine.engine import Assignment, Engine, RoundOutcome, RoundPlan
from profl_strategy.engine.protocol import ARRAYS, StepOrder
from profl_strategy.engine.seeding import seeded
from profl_strategy.engine.step import STAGE_CONDENSE, STAGE_GROW, STAGE_SHRINK, Step
from profl_strategy.memory.plans.picker import PlanPicker
from profl_strategy.methods.profl.condense import carry_forward, condense_into_output_module
from profl_strategy.methods.profl.movement import (
    CandidateRecorder,
    ConvergenceDetector,
    sampling_noise,
)
from profl_strategy.methods.profl.schedule import ProgressiveSchedule
from profl_strategy.methods.profl.step_model import GlobalModel, StepModel


class ProFL(Engine):
    """Progressive training of a block-partitioned model under per-node memory budgets.

    Parameters
    ----------
    detector : ConvergenceDetector
        Effective-movement test on the active block (hence :attr:`takes_detector`).
    **engine
        The engine's arguments (:class:`~profl_strategy.engine.engine.Engine`), its
        ``schedule`` a :class:`ProgressiveSchedule`; the method options come in
        ``method_config`` (``plans``, ``carry_forward``).
    """

    takes_detector: ClassVar[bool] = True
    model: GlobalModel  # the engine's ``nn.Module``, with ProFL's blocks and output modules
    schedule: ProgressiveSchedule  # the engine's ``Schedule``, with ProFL's stages

    def __init__(self, *, detector: ConvergenceDetector, **engine: Any) -> None:
        super().__init__(**engine)
        if not isinstance(self.schedule, ProgressiveSchedule):
            raise ValueError("ProFL walks its progressive schedule: set method.full_model: false")
        self.detector = detector
        record = bool(self.method_config.get("em", {}).get("record", False))
        self.candidates = CandidateRecorder() if record else None
        self.plans = PlanPicker(
            self.key,
            self.batch_size,
            str(self.method_config.get("plans", "off")),
            int(self.method_config.get("plans_min_micro_batch", 4)),
        )
        with seeded(self.seed):
            self.model = GlobalModel(self.key.spec(), self.key.out_depth)
        self._step_started: Step | None = None
        self.barred: dict[tuple[int, Step], set[str]] = {}  # plans a node's guard stopped

    # ---- what each node is sent ---------------------------------------------------
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
        sub = StepModel.of(self.key, step)
        return list(sub.state_dict()), sub.trainable_keys()

    def fits(self, step: Step, nodes: Iterable[int]) -> dict[int, tuple[str, float] | None]:
        """Per node with a known budget: ``(plan, estimated peak MB)`` for ``step``, or None."""
        unlimited = self.plans.unlimited(step)
        return {
            n: self.plans.fit(
                step,
                self.budgets[n],
                self.nodes.devices.get(n, "cpu"),
                frozenset(self.barred.get((n, step), ())),
            )
            if self.memory_aware
            else unlimited
            for n in nodes
            if n in self.budgets
        }

    def on_overrun(self, node: int, sent: Assignment) -> None:
        """Never hand ``node`` this step with this plan again: it measured over budget."""
        label = sent.note.get("plan", "plain")
        step = getattr(sent.order, "step", None)
        if step is not None:
            self.barred.setdefault((node, step), set()).add(label)
            log(WARNING, "node %s will not be sent step %s with plan %s again", node, step, label)

    def plan_round(self, server_round: int, online: set[int]) -> RoundPlan:
        """Eligible nodes are those some plan (plain training when plans are off) fits;
        each selected node is sent the step's arrays, its plan and the plan's peak."""
        step = self.schedule.current
        fits = self.fits(step, online)
        selected = self.select((n for n, fit in fits.items() if fit), online)
        keys, trainable = self.step_keys(step)
        state = self.model.state_dict()
        sub = ArrayRecord({k: state[k] for k in keys})
        shapes = {k: tuple(state[k].shape) for k in trainable}
        assignments = []
        for n in selected:
            label, plan_need = fits[n]  # type: ignore[misc]
            order = StepOrder(
                run=self.run,
                server_round=server_round,
                need_mb=plan_need,
                enforce_budget=self.memory_aware,
                step=step,
                plan=None if self.plans.plain_only(step) else label,
            )
            note = {"plan": label, "plan_need_mb": plan_need}
            assignments.append(Assignment(n, order, sub, shapes, note=note))
        plans = dict(Counter(a.note["plan"] for a in assignments))
        eligible = sum(1 for fit in fits.values() if fit)
        return RoundPlan(server_round, len(online), eligible, self.need_mb(step), assignments,
                         self.nodes, note={"plans": plans})  # fmt: skip

    # ---- the progressive loop -------------------------------------------------------
    def block_params(self, t: int) -> torch.Tensor:
        """The active block's parameters as one vector, for effective movement."""
        return nn.utils.parameters_to_vector(self.model.blocks[t].parameters()).detach()

    def block_noise(self, outcome: RoundOutcome) -> float:
        """Client-sampling variance of this round's step of the active block (denoised EM)."""
        if self.detector.variant != "denoised" and self.candidates is None:
            return 0.0
        t = self.schedule.current.block
        names = [f"blocks.{t}.{n}" for n, _ in self.model.blocks[t].named_parameters()]
        updates = [
            torch.cat(
                [
                    torch.from_numpy(r.content.array_records[ARRAYS][k].numpy()).flatten()
                    for k in names
                ]
            )
            for r in outcome.good
        ]
        weights = [float(r.trained.num_examples) for r in outcome.good]
        return sampling_noise(updates, weights)

    def converged(self, plan: RoundPlan, outcome: RoundOutcome) -> tuple[bool, dict[str, Any]]:
        """Effective movement of the active block after this round's merge.

        A condensing step trains no block: it runs to its round count.
        """
        if self.schedule.current.stage == STAGE_CONDENSE:
            return False, {}
        noise = self.block_noise(outcome)
        params = self.block_params(self.schedule.current.block)
        em = self.detector.update(params, noise)
        fields: dict[str, Any] = {"em": em}
        if self.detector.variant == "denoised" or self.candidates is not None:
            fields["sampling_noise"] = noise
        if self.candidates is not None:
            fields["em_candidates"] = self.candidates.update(params, noise)
        return self.detector.converged, fields

    def begin_round(self, step: Step) -> None:
        """Enter a new step: fold the trained block into the next output module."""
        if step == self._step_started:
            return
        last = self.key.spec().num_blocks - 1
        # With condensing steps, out.{t} is initialised when block t + 1's condensing
        # step starts, and distilled there; the stage-1 step of block t keeps it.
        into = {STAGE_SHRINK: step.block, STAGE_CONDENSE: step.block - 1}.get(step.stage)
        distils = any(s.stage == STAGE_CONDENSE for s in self.schedule.steps)
        if into is not None and into < last and (step.stage == STAGE_CONDENSE or not distils):
            copied = condense_into_output_module(self.model, into)
            log(INFO, "stage 1: output module of block %d initialised from block %d "
                "(%d layers)", into, into + 1, copied)  # fmt: skip
        if step.stage == STAGE_GROW and step.block > 0 and self.method_config.get("carry_forward"):
            copied = carry_forward(self.model, step.block, block_trained=self.schedule.shrinks)
            log(INFO, "stage 2: step %s starts from step %s's output module (%d layers)",
                step, Step(STAGE_GROW, step.block - 1), copied)  # fmt: skip
        self.detector.reset(self.block_params(step.block))
        if self.candidates is not None:
            self.candidates.reset(self.block_params(step.block))
        self._step_started = step

    def eval_model(self, step: Step) -> nn.Module:
        """The sub-model of the step just trained, the deliverable model at the end."""
        return self.final_model() if self.schedule.done else self.step_model(step)

    def step_model(self, step: Step) -> nn.Module:
        """A step's sub-model with the global weights."""
        sub = StepModel.of(self.key, step)
        state = self.model.state_dict()
        sub.load_state_dict({k: state[k] for k in sub.state_dict()})
        return sub

    def final_model(self) -> nn.Module:
        """The deliverable model: real blocks and head.

        A run cut before its last stage-2 step (a time box, a round budget smaller
        than the schedule) delivers the sub-model of the last step it trained: its
        output module stands in for the blocks never trained, which the full model
        would run at their initial weights (issue 16's GPU run, cut inside step s2b3 of
        5: its full model scored 0.135 where that step had scored up to 0.30).
        """
        from profl_strategy.models import build_full_model

        last = self._step_started
        cut = not self.schedule.done and last is not None
        if (
            cut
            and last is not None
            and last.stage != STAGE_CONDENSE
            and last != self.schedule.steps[-1]
        ):
            return self.step_model(last)
        full = build_full_model(self.key.spec())
        state = self.model.state_dict()
        full.load_state_dict({k: state[k] for k in full.state_dict()})
        return full

    def memory_summary(self) -> dict[str, Any]:
        """Estimated peak MB of each step of the schedule (plain training)."""
        steps = {str(s): round(self.need_mb(s), 2) for s in self.schedule.steps}
        return {"step_peak_mb_est": steps, "worst_peak_mb_est": max(steps.values())}

    # ---- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {
            "detector": self.detector.state_dict(),
            "step_started": self._step_started,
            "candidates": None if self.candidates is None else self.candidates.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.detector.load_state_dict(state["detector"])
        self._step_started = state["step_started"]
        if self.candidates is not None and state.get("candidates"):
            self.candidates.load_state_dict(state["candidates"])
