"""The ClientApp checks every step against its own budget and returns only what it trained."""

from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict

from client_app.app import budget as budget_handler
from client_app.app import train as train_handler
from profl_strategy.engine.budgets import NodeConfigError
from profl_strategy.engine.protocol import (
    QUERY_BUDGET,
    TRAIN_STEP,
    Budget,
    ConfigProblem,
    Expired,
    Refused,
    Trained,
    read_reply,
)
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.methods.profl.step_model import StepModel
from tests.support.client import DATA_MB, KEY, NODE, STEP, message, step_need_mb


def context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    """As inside Flower's simulation engine, where budgets come from the memory profile."""
    monkeypatch.setattr("client_app.node.in_simulation", lambda: True)


pytestmark = pytest.mark.usefixtures("task_identity")


def test_over_budget_node_refuses_without_training(data_dir: Path) -> None:
    need = step_need_mb()
    budget = need * 0.9 + DATA_MB
    reply = train_handler(message(data_dir, TRAIN_STEP), context(NODE | {"memory-mb": budget}))
    answer = read_reply(reply.content)
    assert isinstance(answer, Refused) and answer.need_mb == pytest.approx(need)
    assert answer.reason == "over budget"
    assert not reply.content.array_records  # nothing trained, nothing sent


def test_node_refuses_an_order_whose_estimate_disagrees_with_its_own(data_dir: Path) -> None:
    need = step_need_mb()
    msg = message(data_dir, TRAIN_STEP, need_mb=need * 0.5)  # a server on other code
    reply = train_handler(msg, context(NODE | {"memory-mb": need * 10}))
    answer = read_reply(reply.content)
    assert isinstance(answer, Refused) and answer.need_mb == pytest.approx(need)
    assert "different code" in answer.reason
    assert not reply.content.array_records


def test_node_within_budget_returns_only_trained_keys(data_dir: Path) -> None:
    need = step_need_mb()
    budget = need * 1.1 + DATA_MB
    reply = train_handler(message(data_dir, TRAIN_STEP), context(NODE | {"memory-mb": budget}))
    sub = StepModel(KEY.spec(), STEP, KEY.out_depth)
    assert sorted(reply.content["arrays"].keys()) == sorted(sub.trainable_keys())
    assert not any(k.startswith("blocks.0.") for k in reply.content["arrays"].keys())
    answer = read_reply(reply.content)
    assert isinstance(answer, Trained)
    assert answer.num_examples == 300  # 60000 / 200 partitions


def test_node_trains_on_its_subsample(data_dir: Path) -> None:
    msg = message(data_dir, TRAIN_STEP, subsample=0.5)
    reply = train_handler(msg, context(NODE | {"memory-mb": step_need_mb() * 1.1 + DATA_MB}))
    answer = read_reply(reply.content)
    assert isinstance(answer, Trained) and answer.num_examples == 150  # half of the 300 rows


def test_budget_query_follows_the_profile_or_node_config(data_dir: Path, simulated: None) -> None:
    msg = message(data_dir, QUERY_BUDGET)
    profile = read_reply(budget_handler(msg, context(NODE)).content)
    assert isinstance(profile, Budget)
    assert profile.source.startswith("uniform-tiers")
    assert profile.partition_id == 3
    assert profile.device == "cpu" and profile.idle_mb >= 0  # > 0 once a call prepared it
    deployed = read_reply(budget_handler(msg, context(NODE | {"memory-mb": 64})).content)
    assert isinstance(deployed, Budget)
    assert deployed.memory_mb == pytest.approx(64.0 - DATA_MB)  # data and runtime held too
    assert deployed.source == "node-config"


def test_deployed_node_without_memory_mb_refuses_and_suggests_auto(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROFL_INPROCESS_ENGINE", raising=False)  # an in-process run set it
    reply = budget_handler(message(data_dir, QUERY_BUDGET), context(NODE))
    answer = read_reply(reply.content)
    assert isinstance(answer, ConfigProblem)
    assert "node-config has no memory-mb" in answer.config_error
    assert "memory-mb=auto" in answer.config_error
    with pytest.raises(NodeConfigError, match="memory-mb=auto"):
        train_handler(message(data_dir, TRAIN_STEP), context(NODE))


def test_memory_mb_auto_takes_what_the_device_gives(data_dir: Path) -> None:
    from profl_strategy.memory.device import auto_budget_mb

    expected, _ = auto_budget_mb()
    reply = budget_handler(message(data_dir, QUERY_BUDGET), context(NODE | {"memory-mb": "auto"}))
    answer = read_reply(reply.content)
    assert isinstance(answer, Budget) and answer.source.startswith("auto: ")
    # MemAvailable moves a little between two reads
    assert answer.memory_mb == pytest.approx(expected - DATA_MB, rel=0.05)


def test_node_below_plain_need_trains_with_its_plan(data_dir: Path) -> None:
    plain = step_need_mb()
    plan = Plan(micro_batch=4, checkpoint=True)
    need = step_need_mb(plan)
    assert need < plain
    msg = message(data_dir, TRAIN_STEP, plan=plan)
    budget = (need + plain) / 2 + DATA_MB  # too small for plain training, enough for the plan
    reply = train_handler(msg, context(NODE | {"memory-mb": budget}))
    answer = read_reply(reply.content)
    assert isinstance(answer, Trained)
    assert answer.plan == "mb4+ckpt"
    assert answer.need_mb == pytest.approx(need)
    tight = train_handler(msg, context(NODE | {"memory-mb": need * 0.9 + DATA_MB}))
    assert isinstance(read_reply(tight.content), Refused)


def test_expired_messages_are_not_run() -> None:
    import time

    from client_app.mods import skip_expired

    def must_not_run(msg: Message, ctx: Context) -> Message:
        raise AssertionError("an expired message reached the handler")

    late = Message(RecordDict(), dst_node_id=1, message_type=TRAIN_STEP, ttl=0.01)
    time.sleep(0.05)
    reply = skip_expired(late, context(NODE), must_not_run)
    answer = read_reply(reply.content)
    assert isinstance(answer, Expired) and answer.late_s > 0
    fresh = Message(RecordDict(), dst_node_id=1, message_type=TRAIN_STEP, ttl=60)
    ran = skip_expired(fresh, context(NODE), lambda m, c: Message(RecordDict(), reply_to=m))
    assert not ran.content.metric_records


@pytest.mark.parametrize(
    ("value", "shown"),
    [(float("nan"), "nan"), (float("inf"), "inf"), ("lots", "'lots'"), (-1, "-1"), (0, "0")],
)
def test_bad_memory_mb_is_answered_with_a_config_error(
    data_dir: Path, value: object, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(NODE | {"memory-mb": value})
    ctx.node_id = 4242
    reply = budget_handler(message(data_dir, QUERY_BUDGET), ctx)
    assert not reply.has_error() and not reply.content.metric_records  # no budget to use
    answer = read_reply(reply.content)
    assert isinstance(answer, ConfigProblem)
    error = answer.config_error
    assert error.startswith(f"SuperNode 4242: node-config memory-mb={shown} is not allowed")
    assert "finite number of MB > 0" in error
    assert error in caplog.text  # and the node's own log says so


def test_train_message_for_a_bad_node_fails_with_the_config_error(data_dir: Path) -> None:
    bad = NODE | {"memory-mb": float("nan")}
    with pytest.raises(NodeConfigError, match="SuperNode 1: node-config memory-mb=nan"):
        train_handler(message(data_dir, TRAIN_STEP), context(bad))
