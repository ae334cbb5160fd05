"""ProFL's handlers: report the node's memory budget, and train only the step it is sent."""

from __future__ import annotations

from collections.abc import Iterable
from logging import ERROR
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.common import log

from client_app.handler import Done, Job, Local, handle
from client_app.node import device, node_budget
from profl_strategy.engine.budgets import NodeConfigError
from profl_strategy.engine.protocol import CONFIG, Budget, BudgetQuery, ConfigProblem, StepOrder
from profl_strategy.engine.step import Step
from profl_strategy.memory.model import estimate_step
from profl_strategy.memory.plans.memory import estimate_plan
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.memory.plans.train import train_with_plan
from profl_strategy.memory.runtime import prepared_idle_mb
from profl_strategy.methods.profl.step_model import StepModel, step_loss
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step


def budget(msg: Message, context: Context) -> Message:
    """Tell the strategy how much memory this node can give to training.

    A node-config the run cannot use is answered with a :class:`ConfigProblem`
    (and logged here, on the node) instead of an exception: the strategy then
    leaves this node out and tells the user why, without a traceback.
    """
    query = BudgetQuery.from_record(msg.content.config_records[CONFIG])
    try:  # light: a deployed ClientApp runs every message in a fresh process
        mb, source = node_budget(context, query.run, load=False)
    except NodeConfigError as err:
        log(ERROR, "%s", err)
        return Message(ConfigProblem(str(err)).content(), reply_to=msg)
    partition = int(context.node_config.get("partition-id", -1))
    where = device()
    reply = Budget(mb, source, partition, where.type, prepared_idle_mb())
    return Message(reply.content(), reply_to=msg)


def fit_step(
    key: ModelKey,
    step: Step,
    plan: Plan | None,
    arrays: ArrayRecord,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    hyper: dict[str, Any],
) -> tuple[float, int, ArrayRecord]:
    """Build ``step``'s model from ``arrays``, train it under ``plan``; mean loss, examples
    seen and the trained arrays. What a train call does once its data is loaded
    (``benchmarks.memory.cpu`` measures exactly this).

    ``arrays`` are consumed as they load (each is popped from the message's record),
    so the call does not hold a second copy of the state while it trains."""
    model = StepModel.of(key, step)
    model.load_state_dict(arrays.to_torch_state_dict(keep_input=False))
    if plan is None or plan == Plan():
        loss, seen = train_step(model, loader, **hyper, loss_fn=step_loss(step))
    else:
        loss, seen = train_with_plan(model, loader, plan, **hyper)
    state = model.state_dict()
    return loss, seen, ArrayRecord({k: state[k].detach().cpu() for k in model.trainable_keys()})


class StepJob(Job[StepOrder]):
    """``train.step``: one step of the schedule, under the order's plan if it has one."""

    order_type = StepOrder

    def __init__(self, msg: Message) -> None:
        super().__init__(msg)
        label = self.order.plan
        self.plan = Plan.from_label(label) if label is not None else None

    def need_mb(self) -> float:
        key, step, batch = self.order.run.model, self.order.step, self.order.run.train.batch_size
        if self.plan is None:
            return estimate_step(key, step, batch).total_mb
        return estimate_plan(key, step, batch, self.plan).total_mb

    def what(self) -> str:
        return f"step {self.order.step}"

    def run(self, local: Local) -> Done:
        hyper = self.order.run.train.hyper(device=local.device)
        loss, seen, arrays = fit_step(
            self.order.run.model, self.order.step, self.plan, self.arrays, local.loader, hyper
        )
        return Done(arrays, loss, seen, {"plan": (self.plan or Plan()).label()})


def train(msg: Message, context: Context) -> Message:
    """Train the active block (and its output module) on this node's partition.

    A ``plan`` in the order (strategy with plans on) says how: micro-batches,
    checkpointing, an offloaded prefix... (:mod:`profl_strategy.memory.plans`). The
    node checks that plan's estimated peak against its own budget first.
    """
    return handle(StepJob, msg, context)
