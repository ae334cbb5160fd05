"""Stage/step order and transitions of the progressive schedule."""

import pytest

from profl_strategy.engine.step import Step
from profl_strategy.methods.profl.schedule import ProgressiveSchedule, progressive_steps


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


def _walk(s: ProgressiveSchedule, converged_at: dict[str, int] | None = None) -> list[tuple]:
    """Run a schedule to its end; a step 'converges' after the rounds given for it."""
    ends, rounds = [], 0
    while not s.done:
        step = str(s.current)
        rounds += 1
        t = s.record_round(converged=s.rounds_in_step + 1 >= (converged_at or {}).get(step, 10**9))
        if t:
            ends.append((step, t.reason, t.rounds))
    return ends


def test_stage2_shares_the_run_budget_and_the_last_step_trains_to_its_end() -> None:
    s = ProgressiveSchedule(3, min_rounds=2, max_rounds_shrink=3, max_rounds_grow=4, budget=40)
    ends = _walk(s)
    assert [e[2] for e in ends[:3]] == [3, 3, 3]  # stage 1 keeps its caps
    # 31 rounds left for three stage-2 steps: 10, then 21 // 2 = 10, then the rest
    assert [e[2] for e in ends[3:]] == [10, 10, 11]
    assert s.rounds_total == 40 == s.max_rounds()


def test_rounds_a_converged_step_saves_go_to_later_steps() -> None:
    s = ProgressiveSchedule(2, min_rounds=2, max_rounds_shrink=2, max_rounds_grow=2, budget=24)
    ends = _walk(s, converged_at={"s2b0": 3, "s2b1": 3})
    assert ends[2] == ("s2b0", "converged", 3)
    # the last step does not end on convergence: it trains until the budget is spent
    assert ends[3] == ("s2b1", "round-cap", 24 - 4 - 3)


def test_a_budget_smaller_than_stage_1_leaves_stage_2_its_minimum() -> None:
    s = ProgressiveSchedule(2, min_rounds=2, max_rounds_shrink=3, max_rounds_grow=3, budget=4)
    ends = _walk(s)
    assert [e[2] for e in ends] == [3, 3, 2, 2]  # the ServerApp stops the run at 4


def test_budget_position_survives_a_checkpoint() -> None:
    a = ProgressiveSchedule(2, 1, 1, 1, budget=12)
    for _ in range(4):
        a.record_round(converged=False)
    b = ProgressiveSchedule(2, 1, 1, 1, budget=12)
    b.load_state_dict(a.state_dict())
    assert (b.current, b.cap(), b.step_started_at) == (a.current, a.cap(), a.step_started_at)


def test_weighted_shares_give_larger_blocks_more_of_the_budget() -> None:
    weights = [1.0, 1.0, 2.0, 4.0]
    sched = ProgressiveSchedule(4, 2, 3, 5, shrink=False, budget=80, share_weights=weights)
    caps = []
    while not sched.done:
        caps.append(sched.cap())
        while sched.record_round(converged=False) is None:
            pass
    assert caps == [10, 10, 20, 40]  # 80 * 1/8, 70 * 1/7, 60 * 2/6, the rest
    equal = ProgressiveSchedule(4, 2, 3, 5, shrink=False, budget=80)
    assert equal.cap() == 20


def test_share_weights_must_fit_the_blocks() -> None:
    with pytest.raises(ValueError, match="share weights"):
        ProgressiveSchedule(4, 2, 3, 5, shrink=False, budget=80, share_weights=[1.0, 2.0])


def test_under_fixed_caps_the_last_step_trains_to_its_cap_unless_em_may_end_it() -> None:
    converged_at = {"s2b0": 3, "s2b1": 3}
    caps = ProgressiveSchedule(
        2, min_rounds=2, max_rounds_shrink=5, max_rounds_grow=8, shrink=False
    )
    ends = _walk(caps, converged_at)
    assert ends == [("s2b0", "converged", 3), ("s2b1", "round-cap", 8)]
    paper = ProgressiveSchedule(
        2, min_rounds=2, max_rounds_shrink=5, max_rounds_grow=8, shrink=False, em_ends_last=True
    )
    assert _walk(paper, converged_at) == [("s2b0", "converged", 3), ("s2b1", "converged", 3)]


def test_with_fixed_caps_only_effective_movement_leaves_shared_stage2_steps_their_share() -> None:
    converged_at = {"s1b1": 2, "s2b0": 3, "s2b1": 3}
    shares = ProgressiveSchedule(2, 2, 4, 4, budget=30, em_stop="fixed-caps")
    # stage 1 keeps its fixed caps, so a stop there still saves rounds for stage 2
    assert _walk(shares, converged_at)[:3] == [
        ("s1b1", "converged", 2),
        ("s1b0", "round-cap", 4),
        ("s2b0", "round-cap", (30 - 6) // 2),
    ]
    stops = ProgressiveSchedule(2, 2, 4, 4, budget=30, em_stop="always")
    assert _walk(stops, converged_at)[2] == ("s2b0", "converged", 3)
    with pytest.raises(ValueError, match="em-stop"):
        ProgressiveSchedule(2, 2, 4, 4, em_stop="never")


def test_em_min_share_holds_a_converged_step_until_that_share_of_its_cap() -> None:
    converged_at = {"s2b0": 3, "s2b1": 3}
    held = ProgressiveSchedule(2, 2, 5, 8, shrink=False, em_ends_last=True, em_min_share=0.75)
    # converged from round 3 on, but ends only at ceil(0.75 * 8) = 6 rounds
    assert _walk(held, converged_at) == [("s2b0", "converged", 6), ("s2b1", "converged", 6)]
    with pytest.raises(ValueError, match="em-min-share"):
        ProgressiveSchedule(2, 2, 5, 8, em_min_share=1.0)


def test_em_stop_save_shortens_the_run_and_keeps_later_shares() -> None:
    converged_at = {"s2b0": 3, "s2b1": 3, "s2b2": 3}
    save = ProgressiveSchedule(3, 2, 4, 4, shrink=False, budget=30, em_stop="save")
    # s2b0 stops after 3 of its 10 rounds; s2b1 keeps 10 (not 27 // 2), the last its 10
    assert _walk(save, converged_at) == [
        ("s2b0", "converged", 3),
        ("s2b1", "converged", 3),
        ("s2b2", "round-cap", 10),
    ]
    assert save.rounds_total == 16 and save.rounds_saved == 14
    always = ProgressiveSchedule(3, 2, 4, 4, shrink=False, budget=30, em_stop="always")
    assert _walk(always, converged_at)[1:] == [("s2b1", "converged", 3), ("s2b2", "round-cap", 24)]


def test_em_stop_save_survives_a_checkpoint() -> None:
    a = ProgressiveSchedule(3, 2, 4, 4, shrink=False, budget=30, em_stop="save")
    for converged in (False, False, True):
        a.record_round(converged)
    b = ProgressiveSchedule(3, 2, 4, 4, shrink=False, budget=30, em_stop="save")
    b.load_state_dict(a.state_dict())
    assert b.rounds_saved == 7 and b.cap() == a.cap() == 10
