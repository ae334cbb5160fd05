"""The whole-model methods' schedule: one step, a fixed number of rounds, checkpointable."""

import pytest

from profl_strategy.engine.fixed_schedule import FixedSchedule
from profl_strategy.engine.step import STAGE_FULL, Step

FULL = Step(STAGE_FULL, 3)


def _train(s: FixedSchedule, rounds: int, converged: bool = False) -> list:
    return [s.record_round(converged) for _ in range(rounds)]


def test_one_step_until_the_rounds_are_trained() -> None:
    s = FixedSchedule(FULL, 3)
    assert s.steps == [FULL] and s.current == FULL and not s.done and s.max_rounds() == 3
    assert _train(s, 2, converged=True) == [None, None]  # no early stop
    t = s.record_round(False)
    assert s.done and t is not None
    assert (t.finished, t.reason, t.rounds, t.next) == (FULL, "round-cap", 3, None)
    assert t.record() == {"reason": "round-cap", "rounds": 3, "next": None}
    with pytest.raises(RuntimeError):
        _ = s.current


def test_skip_ends_the_run() -> None:
    s = FixedSchedule(FULL, 5)
    s.record_round(False)
    t = s.skip("no-eligible-node")
    assert s.done and (t.finished, t.reason, t.rounds) == (FULL, "no-eligible-node", 1)
    assert t.next is None


def test_at_least_one_round() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        FixedSchedule(FULL, 0)


def test_state_round_trips() -> None:
    a = FixedSchedule(FULL, 4)
    _train(a, 2)
    b = FixedSchedule(FULL, 4)
    b.load_state_dict(a.state_dict())
    assert (b.trained, b.done, b.current) == (2, False, FULL)
    assert _train(b, 2)[-1] is not None and b.done


def test_finished_run_resumes_with_more_rounds() -> None:
    done = FixedSchedule(FULL, 3)
    _train(done, 3)
    assert done.done
    longer = FixedSchedule(FULL, 5)
    longer.load_state_dict(done.state_dict())
    assert not longer.done and longer.trained == 3
    t = _train(longer, 2)[-1]
    assert longer.done and t is not None and t.rounds == 5
    same = FixedSchedule(FULL, 3)
    same.load_state_dict(done.state_dict())
    assert same.done  # the same budget: nothing left to train


def test_a_checkpoint_from_the_progressive_schedule_resumes() -> None:
    """A baseline's checkpoint from when it ran on ProFL's schedule as one full-model step."""
    finished = {"index": 1, "rounds_in_step": 0, "rounds_total": 3, "step_started_at": 3,
                "rounds_saved": 0}  # fmt: skip
    s = FixedSchedule(FULL, 5)
    s.load_state_dict(finished)
    assert s.trained == 3 and not s.done
