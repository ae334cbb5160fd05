"""The ClientApp checks every step against its own budget and returns only what it trained."""

from pathlib import Path

import pytest
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client_app.app import budget as budget_handler
from client_app.app import train as train_handler
from profl_strategy.budgets import MemoryProfile, NodeConfigError
from profl_strategy.memory import ModelKey, estimate_full, estimate_step
from profl_strategy.protocol import QUERY_BUDGET, TRAIN_STEP, run_record, step_record
from profl_strategy.step_model import GlobalModel, Step, StepModel

KEY = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1)
STEP = Step(2, 1)


def message(data_dir: Path, kind: str) -> Message:
    profile = MemoryProfile("uniform-tiers", (1, 1), (0.3, 1.0))
    base = run_record(
        model=KEY,
        profile=profile,
        full_peak_mb=estimate_full(KEY, 16).total_mb,
        seed=0,
        data={
            "dataset": "fmnist",
            "data-dir": str(data_dir),
            "partitioner": "iid",
            "alpha": 0.5,
            "shards": 2,
        },
        train={
            "batch-size": 16,
            "local-epochs": 1,
            "lr": 0.05,
            "momentum": 0.9,
            "weight-decay": 0.0,
            "proximal-mu": 0.0,
        },
    )
    if kind == QUERY_BUDGET:
        return Message(RecordDict({"config": base}), dst_node_id=1, message_type=kind)
    cfg = step_record(base, STEP, 1, estimate_step(KEY, STEP, 16).total_mb)
    sub = StepModel(KEY.spec(), STEP, KEY.out_depth)
    state = GlobalModel(KEY.spec(), KEY.out_depth).state_dict()
    arrays = ArrayRecord({k: state[k] for k in sub.state_dict()})
    return Message(RecordDict({"arrays": arrays, "config": cfg}), dst_node_id=1, message_type=kind)


def context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


NODE = {"partition-id": 3, "num-partitions": 200}


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower's runtime sets who is sending; outside it, a test must."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def test_over_budget_node_refuses_without_training(data_dir: Path) -> None:
    need = estimate_step(KEY, STEP, 16).total_mb
    reply = train_handler(message(data_dir, TRAIN_STEP), context(NODE | {"memory-mb": need * 0.9}))
    m = reply.content["metrics"]
    assert m["refused"] == 1 and m["need-mb"] == pytest.approx(need)
    assert not reply.content.array_records  # nothing trained, nothing sent


def test_node_within_budget_returns_only_trained_keys(data_dir: Path) -> None:
    need = estimate_step(KEY, STEP, 16).total_mb
    reply = train_handler(message(data_dir, TRAIN_STEP), context(NODE | {"memory-mb": need * 1.1}))
    sub = StepModel(KEY.spec(), STEP, KEY.out_depth)
    assert sorted(reply.content["arrays"].keys()) == sorted(sub.trainable_keys())
    assert not any(k.startswith("blocks.0.") for k in reply.content["arrays"].keys())
    assert reply.content["metrics"]["num-examples"] == 300  # 60000 / 200 partitions


def test_node_trains_on_its_subsample(data_dir: Path) -> None:
    msg = message(data_dir, TRAIN_STEP)
    msg.content["config"]["subsample"] = 0.5
    need = estimate_step(KEY, STEP, 16).total_mb
    reply = train_handler(msg, context(NODE | {"memory-mb": need * 1.1}))
    assert reply.content["metrics"]["num-examples"] == 150  # half of the 300 rows


def test_budget_query_follows_the_profile_or_node_config(data_dir: Path) -> None:
    msg = message(data_dir, QUERY_BUDGET)
    simulated = budget_handler(msg, context(NODE)).content
    assert simulated["config"]["source"].startswith("uniform-tiers")
    assert simulated["metrics"]["partition-id"] == 3
    deployed = budget_handler(msg, context(NODE | {"memory-mb": 64})).content
    assert deployed["metrics"]["memory-mb"] == 64.0
    assert deployed["config"]["source"] == "node-config"


def test_node_below_plain_need_trains_with_its_plan(data_dir: Path) -> None:
    from profl_strategy.plan_memory import estimate_plan
    from profl_strategy.plans import Plan

    plain = estimate_step(KEY, STEP, 16).total_mb
    plan = Plan(micro_batch=4, checkpoint=True)
    need = estimate_plan(KEY, STEP, 16, plan).total_mb
    assert need < plain
    msg = message(data_dir, TRAIN_STEP)
    msg.content["config"]["plan"] = plan.label()
    budget = (need + plain) / 2  # too small for plain training, enough for the plan
    reply = train_handler(msg, context(NODE | {"memory-mb": budget}))
    assert "refused" not in reply.content["metrics"]
    assert reply.content["plan"]["label"] == "mb4+ckpt"
    assert reply.content["metrics"]["need-mb"] == pytest.approx(need)
    tight = train_handler(msg, context(NODE | {"memory-mb": need * 0.9}))
    assert tight.content["metrics"]["refused"] == 1


def test_expired_messages_are_not_run() -> None:
    import time

    from client_app.mods import skip_expired

    def must_not_run(msg: Message, ctx: Context) -> Message:
        raise AssertionError("an expired message reached the handler")

    late = Message(RecordDict(), dst_node_id=1, message_type=TRAIN_STEP, ttl=0.01)
    time.sleep(0.05)
    reply = skip_expired(late, context(NODE), must_not_run)
    assert reply.content["metrics"]["expired"] == 1
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
    error = reply.content["config"]["config-error"]
    assert error.startswith(f"SuperNode 4242: node-config memory-mb={shown} is not allowed")
    assert "finite number of MB > 0" in error
    assert error in caplog.text  # and the node's own log says so


def test_train_message_for_a_bad_node_fails_with_the_config_error(data_dir: Path) -> None:
    bad = NODE | {"memory-mb": float("nan")}
    with pytest.raises(NodeConfigError, match="SuperNode 1: node-config memory-mb=nan"):
        train_handler(message(data_dir, TRAIN_STEP), context(bad))
