"""ProFL's handlers: report the node's memory budget, and train only the step it is sent."""

from __future__ import annotations

from logging import ERROR

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.common import log

from client_app.node import device, local_loader, node_budget, peak_mb, refusal
from profl_strategy.budgets import NodeConfigError
from profl_strategy.memory import estimate_step
from profl_strategy.plans.memory import estimate_plan
from profl_strategy.plans.plan import Plan
from profl_strategy.plans.train import train_with_plan
from profl_strategy.protocol import (
    ARRAYS,
    CONFIG,
    Budget,
    BudgetQuery,
    ConfigProblem,
    StepOrder,
    Trained,
)
from profl_strategy.step_model import StepModel, step_loss
from profl_strategy.task.train import train_step


def budget(msg: Message, context: Context) -> Message:
    """Tell the strategy how much memory this node can give to training.

    A node-config the run cannot use is answered with a :class:`ConfigProblem`
    (and logged here, on the node) instead of an exception: the strategy then
    leaves this node out and tells the user why, without a traceback.
    """
    query = BudgetQuery.from_record(msg.content[CONFIG])
    try:
        mb, source = node_budget(context, query.run)
    except NodeConfigError as err:
        log(ERROR, "%s", err)
        return Message(ConfigProblem(str(err)).content(), reply_to=msg)
    partition = int(context.node_config.get("partition-id", -1))
    return Message(Budget(mb, source, partition).content(), reply_to=msg)


def train(msg: Message, context: Context) -> Message:
    """Train the active block (and its output module) on this node's partition.

    A ``plan`` in the order (strategy with plans on) says how: micro-batches,
    checkpointing, an offloaded prefix... (:mod:`profl_strategy.plans`). The
    node checks that plan's estimated peak against its own budget first.
    """
    order = StepOrder.from_record(msg.content[CONFIG])
    key, step, batch = order.run.model, order.step, order.run.train.batch_size
    budget_mb, _ = node_budget(context, order.run)
    plan = Plan.from_label(order.plan) if order.plan is not None else None
    if plan is None:
        need_mb = estimate_step(key, step, batch).total_mb
    else:
        need_mb = estimate_plan(key, step, batch, plan).total_mb
    refused = refusal(msg, order, need_mb, budget_mb, f"step {step}")
    if refused is not None:
        return refused
    loader, labels, round_seed = local_loader(order, context)
    torch.manual_seed(round_seed)
    model = StepModel.of(key, step)
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    where = device()
    hyper = order.run.train.hyper(device=where)
    if plan is None or plan == Plan():
        loss, seen = train_step(model, loader, **hyper, loss_fn=step_loss(step))
    else:
        loss, seen = train_with_plan(model, loader, plan, **hyper)
    state = model.state_dict()
    trained = ArrayRecord({k: state[k].detach().cpu() for k in model.trainable_keys()})
    reply = Trained(len(labels), loss, need_mb, budget_mb, peak_mb(where), seen,
                    plan=(plan or Plan()).label())  # fmt: skip
    return Message(reply.content(trained), reply_to=msg)
