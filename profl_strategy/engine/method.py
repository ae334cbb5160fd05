"""What the engine needs from a method's schedule, and what a step's end reports.

The engine (:class:`profl_strategy.engine.engine.Engine`) asks a method three
things: what to train this round (:attr:`Schedule.current`, then
:meth:`~profl_strategy.engine.engine.Engine.plan_round`), whether the run is done
(:attr:`Schedule.done`), and the deliverable model
(:meth:`~profl_strategy.engine.engine.Engine.final_model`). The schedule is typed
here as a protocol so the engine imports no method. Two implement it: the engine's
:class:`~profl_strategy.engine.fixed_schedule.FixedSchedule` (one full-model step for
the run's rounds: the baselines) and ProFL's
:class:`~profl_strategy.methods.profl.schedule.ProgressiveSchedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from profl_strategy.engine.step import Step


@dataclass
class Transition:
    """Why a step ended, and what comes next (None at the end of the run)."""

    finished: Step
    reason: str  # "converged" or "round-cap"
    rounds: int
    next: Step | None

    def record(self) -> dict[str, Any]:
        """The round log's ``transition`` entry."""
        return {
            "reason": self.reason,
            "rounds": self.rounds,
            "next": str(self.next) if self.next else None,
        }


class Schedule(Protocol):
    """The steps of a run and where it stands; checkpointable."""

    steps: list[Step]

    @property
    def done(self) -> bool:
        """True once the last step has ended: the run stops."""
        ...

    @property
    def current(self) -> Step:
        """The step the next round trains."""
        ...

    def max_rounds(self) -> int:
        """The most trained rounds the schedule can take (DepthFL ramps its KD weight over them)."""
        ...

    def record_round(self, converged: bool) -> Transition | None:
        """Count a trained round; end the step if it converged or hit its cap."""
        ...

    def skip(self, reason: str) -> Transition:
        """End the current step without training it (no node can hold it)."""
        ...

    def state_dict(self) -> dict[str, int]:
        """Position in the schedule, for checkpoints."""
        ...

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from :meth:`state_dict`."""
        ...
