"""One step trained for a fixed number of rounds: the whole-model methods' schedule.

FedAvg-full, ExclusiveFL and the width and depth baselines train the same thing in
every round (one full-model step, ``Step(STAGE_FULL, last block)``) until the run's
round budget is spent. Nothing ends their step early, so their schedule needs none of
ProFL's stages, caps or effective-movement rules; it lives with the engine, which
gives it to a method whose config says ``full_model: true``
(:func:`profl_strategy.run.factory.build_schedule`).
"""

from __future__ import annotations

from profl_strategy.engine.method import Transition
from profl_strategy.engine.step import Step


class FixedSchedule:
    """One step, ``rounds`` trained rounds, no early stop; checkpointable.

    Implements :class:`~profl_strategy.engine.method.Schedule`.

    Parameters
    ----------
    step : Step
        What every round trains.
    rounds : int
        Trained rounds after which the step ends (``"round-cap"``) and the run is done:
        the run's ``num-server-rounds``. A round without enough usable replies does not
        count, as in every schedule.
    """

    def __init__(self, step: Step, rounds: int) -> None:
        if rounds < 1:
            raise ValueError(f"a fixed schedule needs at least one round, got {rounds}")
        self.steps = [step]
        self.rounds = rounds
        self.trained = 0  # rounds trained so far
        self.ended = False  # the step ended: by its cap, or skipped

    @property
    def done(self) -> bool:
        """True once the step has ended."""
        return self.ended

    @property
    def current(self) -> Step:
        """The one step, until it has ended."""
        if self.done:
            raise RuntimeError("the fixed schedule has finished")
        return self.steps[0]

    def max_rounds(self) -> int:
        """The most rounds the schedule can take: ``rounds``."""
        return self.rounds

    def record_round(self, converged: bool) -> Transition | None:
        """Count one trained round; end the step at ``rounds``.

        ``converged`` is ignored: a whole-model method trains its budget to the end.
        """
        self.trained += 1
        if self.trained < self.rounds:
            return None
        return self._end("round-cap")

    def skip(self, reason: str) -> Transition:
        """End the step without training it (e.g. no node can hold the whole model)."""
        return self._end(reason)

    def _end(self, reason: str) -> Transition:
        step = self.current
        self.ended = True
        return Transition(step, reason, self.trained, None)

    def state_dict(self) -> dict[str, int]:
        """Rounds trained so far, for checkpoints.

        Under the key :class:`~profl_strategy.methods.profl.schedule.ProgressiveSchedule`
        uses for its total, so a checkpoint a baseline wrote while it still ran on that
        schedule (one full-model step) resumes here.
        """
        return {"rounds_total": self.trained}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`: the step is open while rounds are left.

        ``rounds`` is the run's ``num-server-rounds``, so resuming with a larger one
        reopens a finished run and the saved rounds count against the new budget. A step
        skipped for want of a node is tried again too: budgets are asked again on resume.
        """
        self.trained = int(state["rounds_total"])
        self.ended = self.trained >= self.rounds
