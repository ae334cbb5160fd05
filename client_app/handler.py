"""One skeleton for every handler that works on this node's data: :func:`handle`.

Such a message is answered in the same steps whatever it orders: decode the order,
work out the node's budget, set its allocator policy, estimate the call with the
server's memory model, refuse what the node cannot or must not run, load the round's
data, run the call (seeded, measured and held to its budget) and reply. A message
type supplies only what differs: a :class:`Job`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from torch.utils.data import DataLoader

from client_app.node import (
    Call,
    device,
    local_loader,
    node_budget,
    prepare_node,
    refusal,
    run_measured,
)
from profl_strategy.engine.protocol import ARRAYS, CONFIG, Order, Reply
from profl_strategy.engine.seeding import seeded

OrderT = TypeVar("OrderT", bound=Order)


@dataclass(frozen=True)
class Local:
    """This node's data for the order's round, and the device the call runs on."""

    loader: DataLoader
    labels: np.ndarray
    device: torch.device


@dataclass(frozen=True)
class Done:
    """What a call made of the node's data: the arrays it replies with and, when it
    trained, the mean loss, the examples seen and the reply's fields of its own."""

    arrays: ArrayRecord
    loss: float = 0.0
    seen: int = 0
    more: dict[str, Any] = field(default_factory=dict)


class Job(ABC, Generic[OrderT]):
    """What one message type supplies to :func:`handle`; the rest is the same for all.

    A subclass names its order type and says what the call needs (:meth:`need_mb`),
    what it is (:meth:`what`) and what it does with the node's data (:meth:`run`).
    """

    order_type: ClassVar[type[Order]]
    trains: ClassVar[bool] = True
    """Whether the call trains: then it runs under the node's allocator policy, seeded
    for the round, measured and held to its budget. A query that only reads does not."""

    def __init__(self, msg: Message) -> None:
        self.order: OrderT = self.order_type.from_record(msg.content.config_records[CONFIG])  # type: ignore[assignment]
        self.arrays: ArrayRecord = msg.content.array_records[ARRAYS]

    @abstractmethod
    def need_mb(self) -> float:
        """This node's estimate of the call's peak, which the server's must match."""

    @abstractmethod
    def what(self) -> str:
        """The call in a few words, for the node's log."""

    @abstractmethod
    def run(self, local: Local) -> Done:
        """The call's work on this node's data."""

    def reply(
        self, done: Done, examples: int, need_mb: float, budget_mb: float, call: Call | None
    ) -> Reply:
        """The reply of a call that trained (:meth:`~client_app.node.Call.trained`)."""
        assert call is not None, "a training call is measured"
        return call.trained(examples, done.loss, need_mb, budget_mb, done.seen, **done.more)


def handle(kind: type[Job[Any]], msg: Message, context: Context) -> Message:
    """Answer ``msg`` with its ``kind`` of job: check it against this node's budget, run
    it, reply.

    The budget and the allocator policy come before the estimate, which runs the
    training code on tiny batches (:func:`~client_app.node.prepare_node`).
    """
    job = kind(msg)
    order = job.order
    budget = budget_mb, source = node_budget(context, order.run)
    if job.trains:
        prepare_node(context, source)
    need_mb = job.need_mb()
    refused = refusal(msg, order, need_mb, budget_mb, job.what())
    if refused is not None:
        return refused
    call: Call | None = None
    if job.trains:
        measured = run_measured(msg, context, order, budget, need_mb, lambda: _run(job, context))
        if isinstance(measured, Message):
            return measured  # its guard stopped it past its budget
        (done, examples), call = measured
    else:
        done, examples = _run(job, context)
    reply = job.reply(done, examples, need_mb, budget_mb, call)
    return Message(reply.content(done.arrays), reply_to=msg)


def _run(job: Job[Any], context: Context) -> tuple[Done, int]:
    """Load this node's data for the round and run ``job`` on it (seeded if it trains);
    what it made and the node's number of examples."""
    loader, labels, round_seed = local_loader(job.order, context)
    local = Local(loader, labels, device())
    if not job.trains:
        return job.run(local), len(labels)
    with seeded(round_seed, local.device):
        return job.run(local), len(labels)
