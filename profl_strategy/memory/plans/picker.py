"""Which training plan each node uses for a step, from its memory budget.

With ``plans: off`` a node trains a step only if plain training fits its budget
(:func:`profl_strategy.memory.model.estimate_step`). With ``plans: exact`` (or
``any``, which also allows dropping momentum) the strategy picks, per node, the
fastest plan of :mod:`profl_strategy.memory.plans.plan` whose estimated peak fits, so nodes
too small for plain training still take part. The ClientApp re-checks the
plan it is sent against its own budget with the same estimate.

On a CPU node the host is the device: an offloaded prefix or host-side momentum
moves nothing off it, so those plans are not offered there (``device="cpu"``).
A plan whose measured peak passed a node's budget (its guard stopped it) is
not handed to that node again for that step (``exclude``).

Condensing steps (stage 1, ``condense: distill``) train only a small output
module behind a frozen teacher: they always train plainly.
"""

from __future__ import annotations

from functools import lru_cache

from profl_strategy.engine.step import STAGE_CONDENSE, Step
from profl_strategy.memory.model import estimate_step
from profl_strategy.memory.plans import PLAN_MODES
from profl_strategy.memory.plans.memory import cheapest_plan, choose_plan, estimate_plan
from profl_strategy.memory.plans.plan import Plan, candidate_plans
from profl_strategy.task.model_key import ModelKey

PLAIN = "plain"


def host_free(plan: Plan) -> bool:
    """True if the plan keeps nothing in host memory (so it saves memory on a CPU too)."""
    return not plan.offload_prefix and plan.optimizer != "sgd-momentum-host"


class PlanPicker:
    """Per-(step, budget) plan choice, cached: estimates run small real forwards.

    Parameters
    ----------
    key : ModelKey
        The model's shape key.
    batch_size : int
        Local batch size the plans are priced at.
    mode : str
        ``"off"``, ``"exact"`` or ``"any"`` (see module docstring).
    min_micro_batch : int
        Smallest micro-batch a plan may use.
    """

    def __init__(self, key: ModelKey, batch_size: int, mode: str, min_micro_batch: int) -> None:
        if mode not in PLAN_MODES:
            raise ValueError(f"plans must be one of {PLAN_MODES}, got {mode!r}")
        self.key, self.batch_size, self.mode = key, batch_size, mode
        self.candidates = candidate_plans(
            batch_size, allow_inexact=mode == "any", min_micro_batch=min_micro_batch
        )
        self.on_cpu = [p for p in self.candidates if host_free(p)]
        self.fit = lru_cache(maxsize=4096)(self._fit)

    @property
    def enabled(self) -> bool:
        """True when nodes may train with plans other than plain training."""
        return self.mode != "off"

    def plain_only(self, step: Step) -> bool:
        """True where a step trains without plans (plans off, or a condensing step)."""
        return not self.enabled or step.stage == STAGE_CONDENSE

    def plain_mb(self, step: Step) -> float:
        """Estimated peak of plain training: the step's headline need."""
        return estimate_step(self.key, step, self.batch_size).total_mb

    def unlimited(self, step: Step) -> tuple[str, float]:
        """``(plan label, estimated peak MB)`` of a node with no budget: plain training,
        estimated the way the node will estimate the order it is sent."""
        if self.plain_only(step):
            return PLAIN, self.plain_mb(step)
        return PLAIN, estimate_plan(self.key, step, self.batch_size, Plan()).total_mb

    def _fit(
        self,
        step: Step,
        budget_mb: float,
        device: str = "cuda",
        exclude: frozenset[str] = frozenset(),
    ) -> tuple[str, float] | None:
        """``(plan label, estimated peak MB)`` a node with ``budget_mb`` on ``device`` uses,
        never one of ``exclude``; or None."""
        if self.plain_only(step):
            need = self.plain_mb(step)
            return (PLAIN, need) if need <= budget_mb and PLAIN not in exclude else None
        pool = self.on_cpu if device == "cpu" else self.candidates
        if exclude:
            pool = [p for p in pool if p.label() not in exclude]
        plan = choose_plan(self.key, step, self.batch_size, budget_mb, pool)
        if plan is None:
            return None
        return plan.label(), estimate_plan(self.key, step, self.batch_size, plan).total_mb

    def lowest_mb(self, step: Step) -> float:
        """The least any allowed plan needs (for error messages; prices every candidate)."""
        if self.plain_only(step):
            return self.plain_mb(step)
        return cheapest_plan(self.key, step, self.batch_size, self.candidates)[1].total_mb
