"""Stage/step order and transitions of the progressive schedule."""

import pytest

from profl_strategy.schedule import ProgressiveSchedule, progressive_steps
from profl_strategy.step_model import Step


def test_order_is_back_to_front_then_front_to_back() -> None:
    steps = progressive_steps(3)
    assert steps == [Step(1, 2), Step(1, 1), Step(1, 0), Step(2, 0), Step(2, 1), Step(2, 2)]
    assert progressive_steps(3, shrink=False) == steps[3:]


def test_converged_step_advances_after_min_rounds() -> None:
    s = ProgressiveSchedule(2, min_rounds=2, max_rounds_shrink=5, max_rounds_grow=5)
    assert s.record_round(converged=True) is None  # below min_rounds
    t = s.record_round(converged=True)
    assert t is not None and t.reason == "converged" and t.rounds == 2
    assert t.finished == Step(1, 1) and t.next == Step(1, 0)
    assert s.current == Step(1, 0)


def test_round_cap_ends_a_step_that_never_converges() -> None:
    s = ProgressiveSchedule(2, min_rounds=1, max_rounds_shrink=2, max_rounds_grow=3)
    reasons, rounds = [], 0
    while not s.done:
        rounds += 1
        t = s.record_round(converged=False)
        if t:
            reasons.append((str(t.finished), t.reason, t.rounds))
    assert rounds == 2 + 2 + 3 + 3 == s.max_rounds()
    assert [r[1] for r in reasons] == ["round-cap"] * 4
    assert [r[0] for r in reasons] == ["s1b1", "s1b0", "s2b0", "s2b1"]
    with pytest.raises(RuntimeError):
        _ = s.current


def test_state_round_trips() -> None:
    a = ProgressiveSchedule(3, 1, 4, 4)
    a.record_round(True)
    a.record_round(False)
    b = ProgressiveSchedule(3, 1, 4, 4)
    b.load_state_dict(a.state_dict())
    assert (b.current, b.rounds_in_step) == (a.current, a.rounds_in_step)


def test_caps_below_minimum_are_rejected() -> None:
    with pytest.raises(ValueError, match="max-rounds-stage2"):
        ProgressiveSchedule(3, min_rounds=3, max_rounds_shrink=3, max_rounds_grow=2)


def test_finished_full_model_run_resumes_with_more_rounds() -> None:
    done = ProgressiveSchedule(4, 1, 1, 1, full_model_rounds=3)
    for _ in range(3):
        done.record_round(False)
    assert done.done
    longer = ProgressiveSchedule(4, 1, 1, 1, full_model_rounds=5)
    longer.load_state_dict(done.state_dict())
    assert not longer.done and longer.rounds_in_step == 3
    longer.record_round(False)
    assert longer.record_round(False) is not None and longer.done
    same = ProgressiveSchedule(4, 1, 1, 1, full_model_rounds=3)
    same.load_state_dict(done.state_dict())
    assert same.done  # the same cap: nothing left to train
