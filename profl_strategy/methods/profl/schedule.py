"""The order of ProFL steps and when to move from one to the next.

Stage 1 (progressive model shrinking) visits the blocks back to front, stage 2
(progressive model growing) front to back. A step ends when its block has
converged (and ran at least ``min_rounds``) or when it hits its round cap, so a
run always ends.

With a round ``budget`` (the run's ``num-server-rounds``) stage 2 does not stop
at fixed caps while rounds are left: each stage-2 step may use an equal share of
the rounds the run has left when it starts, and the last step trains until the
budget is spent, as the full-model baselines do. Effective movement never ends
the last step unless asked to (``em_ends_last``, fixed caps only), and ends a
shared stage-2 step only with ``em_stop="always"`` or ``"save"``. With ``always``
the rounds a converged step saves go to the steps after it; with ``save`` every
stage-2 step keeps the share it would have had without stops, so a stop ends the
run that many rounds earlier. ``em_min_share`` keeps effective movement from ending a
step before that share of its cap: with a few non-IID nodes a round a block's slow
drift looks like sampling noise early in a step, and a block frozen too early caps
every block after it. A budget too small for the schedule still ends the
run when it is spent (the ServerApp's round loop), after fewer steps.

The share can be weighted per block (``share_weights``, e.g. by parameter
count): step ``t`` may then use ``w_t / sum(w_j, j >= t)`` of the rounds left,
so a stem of a few hundred weights does not get the rounds of a stage with
a hundred thousand.

With ``condense`` each stage-1 step of a block ``b > 0`` is followed by a
condensing step that distils the trained block into ``out.{b-1}``; it runs a
fixed number of rounds (effective movement watches blocks, not output modules).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from profl_strategy.engine.method import Transition
from profl_strategy.engine.step import STAGE_CONDENSE, STAGE_GROW, STAGE_SHRINK, Step

EM_STOPS = ("always", "save", "fixed-caps")  # when effective movement may end a step


def progressive_steps(num_blocks: int, shrink: bool = True, condense: bool = False) -> list[Step]:
    """Stage 1 from the last block down to the first, then stage 2 upwards.

    ``condense`` follows every stage-1 step of a block ``b > 0`` by a condensing
    step ``Step(STAGE_CONDENSE, b)``.
    """
    if num_blocks < 1:
        raise ValueError(f"a model needs at least one block, got {num_blocks}")
    stage1 = []
    for t in reversed(range(num_blocks)):
        stage1.append(Step(STAGE_SHRINK, t))
        if condense and t > 0:
            stage1.append(Step(STAGE_CONDENSE, t))
    stage2 = [Step(STAGE_GROW, t) for t in range(num_blocks)]
    return (stage1 if shrink else []) + stage2


class ProgressiveSchedule:
    """Stateful walk over the steps; plain Python, checkpointable.

    ProFL's :class:`~profl_strategy.engine.method.Schedule`; the whole-model baselines
    run on the engine's :class:`~profl_strategy.engine.fixed_schedule.FixedSchedule`.
    """

    def __init__(
        self,
        num_blocks: int,
        min_rounds: int,
        max_rounds_shrink: int,
        max_rounds_grow: int,
        shrink: bool = True,
        budget: int = 0,
        condense_rounds: int = 0,
        share_weights: Sequence[float] | None = None,
        em_ends_last: bool = False,
        em_stop: str = "always",
        em_min_share: float = 0.0,
    ) -> None:
        """``budget > 0`` shares the run's rounds across stage 2 (module docstring);
        ``max_rounds_grow`` then only applies without a budget.
        ``condense_rounds > 0`` (with ``shrink``) adds condensing steps of that
        many rounds each. ``share_weights`` (one per block, > 0) weights the
        budget's shares; None shares equally. ``em_ends_last`` lets effective
        movement end the last step under fixed caps (the paper's stop); by default
        the last step trains to its cap, since its rounds make the deliverable model
        and no later block could use the rounds saved. ``em_stop`` says when
        effective movement may end a step at all: ``always`` (a stop under a budget
        passes its rounds on), ``save`` (a stop under a budget shortens the run: the
        later steps keep their shares), or ``fixed-caps`` (only on steps with a fixed
        cap, where a stop saves rounds: stage 1, and stage 2 without a budget; with
        one, every stage-2 step takes its share).
        ``em_min_share`` in [0, 1): effective movement may end a step only once it
        trained that share of its cap (0: from ``min_rounds`` on)."""
        if min_rounds < 1:
            raise ValueError(f"min-rounds-per-step must be >= 1, got {min_rounds}")
        for name, cap in (("stage1", max_rounds_shrink), ("stage2", max_rounds_grow)):
            if cap < min_rounds:
                raise ValueError(
                    f"max-rounds-{name} ({cap}) must be >= min-rounds-per-step ({min_rounds})"
                )
        if condense_rounds < 0:
            raise ValueError(f"condense-rounds must be >= 0, got {condense_rounds}")
        self.steps = progressive_steps(num_blocks, shrink, condense_rounds > 0)
        self.min_rounds = min_rounds
        self.caps = {
            STAGE_SHRINK: max_rounds_shrink,
            STAGE_GROW: max_rounds_grow,
            STAGE_CONDENSE: condense_rounds,
        }
        self.budget = budget
        weights = list(share_weights) if share_weights is not None else [1.0] * num_blocks
        if len(weights) != num_blocks or any(w <= 0 for w in weights):
            raise ValueError(f"share weights must be {num_blocks} numbers > 0, got {weights}")
        self.share_weights = weights
        if em_stop not in EM_STOPS:
            raise ValueError(f"em-stop must be one of {', '.join(EM_STOPS)}, got {em_stop!r}")
        if not 0.0 <= em_min_share < 1.0:
            raise ValueError(f"em-min-share must be in [0, 1), got {em_min_share}")
        self.em_min_share = em_min_share
        self.em_ends_last = em_ends_last
        self.em_stop = em_stop
        self.index = 0
        self.rounds_in_step = 0
        self.rounds_total = 0  # trained rounds over all steps
        self.step_started_at = 0  # rounds_total when the current step began
        self.rounds_saved = 0  # rounds em_stop="save" stops took off stage 2's budget

    @property
    def done(self) -> bool:
        """True after the last step of stage 2 has ended."""
        return self.index >= len(self.steps)

    @property
    def current(self) -> Step:
        """The step to train in the next round."""
        if self.done:
            raise RuntimeError("the progressive schedule has finished")
        return self.steps[self.index]

    def max_rounds(self) -> int:
        """The most rounds the whole schedule can take."""
        return self.budget or sum(self.caps[s.stage] for s in self.steps)

    def cap(self) -> int:
        """Round cap of the current step."""
        step = self.current
        if not self._shared(step):
            return self.caps[step.stage]
        # with em_stop="save", the shares as if no earlier step had stopped early
        left = self.budget - self.step_started_at - self.rounds_saved
        later = [s.block for s in self.steps[self.index :] if s.stage == STAGE_GROW]
        if len(later) == 1:
            return max(self.min_rounds, left)
        total = sum(self.share_weights[b] for b in later)
        return max(self.min_rounds, int(left * self.share_weights[step.block] // total))

    def record_round(self, converged: bool) -> Transition | None:
        """Count one trained round; end the step if it converged or hit its cap."""
        step = self.current
        self.rounds_in_step += 1
        self.rounds_total += 1
        if converged and self._em_may_end(step) and self.rounds_in_step >= self.em_earliest():
            reason = "converged"
        elif self.rounds_in_step >= self.cap():
            reason = "round-cap"
        else:
            return None
        return self._advance(step, reason)

    def em_earliest(self) -> int:
        """The first round of the current step that effective movement may end it at."""
        return max(self.min_rounds, math.ceil(self.em_min_share * self.cap()))

    def _em_may_end(self, step: Step) -> bool:
        """Whether effective movement may end ``step`` (``__init__``: em_ends_last, em_stop)."""
        if step.stage == STAGE_CONDENSE:  # trains no block: runs its rounds
            return False
        if self.index == len(self.steps) - 1:
            return self.em_ends_last and not self.budget
        return self.em_stop in ("always", "save") or not self._shared(step)

    def _shared(self, step: Step) -> bool:
        """Whether ``step``'s cap is a share of the run's budget (stage 2 with a budget)."""
        return bool(self.budget) and step.stage == STAGE_GROW

    def skip(self, reason: str) -> Transition:
        """End the current step without training it (e.g. no node can hold it)."""
        return self._advance(self.current, reason)

    def _advance(self, step: Step, reason: str) -> Transition:
        rounds = self.rounds_in_step
        if reason == "converged" and self.em_stop == "save" and self._shared(step):
            self.rounds_saved += self.cap() - rounds
        self.index += 1
        self.rounds_in_step = 0
        self.step_started_at = self.rounds_total
        return Transition(step, reason, rounds, None if self.done else self.current)

    @property
    def shrinks(self) -> bool:
        """True if stage 1 trains every block before stage 2."""
        return any(s.stage == STAGE_SHRINK for s in self.steps)

    def state_dict(self) -> dict[str, int]:
        """Position in the schedule, for checkpoints."""
        return {
            "index": self.index,
            "rounds_in_step": self.rounds_in_step,
            "rounds_total": self.rounds_total,
            "step_started_at": self.step_started_at,
            "rounds_saved": self.rounds_saved,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position."""
        self.index = int(state["index"])
        self.rounds_in_step = int(state["rounds_in_step"])
        self.rounds_total = int(state.get("rounds_total", self.rounds_in_step))
        self.step_started_at = int(
            state.get("step_started_at", self.rounds_total - self.rounds_in_step)
        )
        self.rounds_saved = int(state.get("rounds_saved", 0))
