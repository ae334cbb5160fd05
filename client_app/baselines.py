"""The baselines' handlers: ``train.width``, ``train.depth`` and ``query.bnstats``.

``train.width`` (AllSmall, HeteroFL, FedRolex) trains the whole model at a
width ratio; ``train.depth`` (DepthFL, InclusiveFL) trains the first ``k``
blocks with classifier heads. Like ProFL's ``train.step``, each is a
:class:`~client_app.handler.Job` for :func:`~client_app.handler.handle`, which reads
everything from its order, checks the sub-model against the node's own budget with
the same memory model the server used, and refuses what it cannot hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message
from torch import nn

from client_app.handler import Done, Job, Local, handle
from client_app.node import Call
from profl_strategy.engine.protocol import BNStatsQuery, DepthOrder, Reply, Statistics, WidthOrder
from profl_strategy.memory.model import estimate_forward, estimate_full
from profl_strategy.methods.baselines.depth import DepthSubModel, depth_loss, depth_need_mb
from profl_strategy.methods.baselines.static_bn import loader_images, local_statistics
from profl_strategy.models import build_full_model
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step

Batch = tuple[torch.Tensor, torch.Tensor]


def _arrays(model: nn.Module) -> ArrayRecord:
    return ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})


def fit_width(
    key: ModelKey,
    arrays: ArrayRecord,
    loader: Iterable[Batch],
    hyper: dict[str, Any],
    mask: list[int] | None = None,
) -> tuple[float, int, ArrayRecord]:
    """Train the whole model of ``key`` (a width sub-model) from ``arrays``; with ``mask``,
    the classifier only scores those classes. What a ``train.width`` call does once its
    data is loaded. ``arrays`` are consumed as they load, as in
    :func:`client_app.step.fit_step`."""
    from profl_strategy.methods.baselines.width import LabelMasked

    model = build_full_model(key.spec())
    model.load_state_dict(arrays.to_torch_state_dict(keep_input=False))
    trained = LabelMasked(model, mask, key.num_classes) if mask is not None else model
    loss, seen = train_step(trained, loader, **hyper)
    return loss, seen, _arrays(model)


def fit_depth(
    key: ModelKey,
    depth: int,
    heads: tuple[int, ...],
    kd_weight: float,
    arrays: ArrayRecord,
    loader: Iterable[Batch],
    hyper: dict[str, Any],
) -> tuple[float, int, ArrayRecord]:
    """Train blocks ``0 .. depth-1`` and ``heads`` from ``arrays`` (a ``train.depth`` call)."""
    model = DepthSubModel(key.spec(), depth, heads)
    model.load_state_dict(arrays.to_torch_state_dict(keep_input=False))
    loss, seen = train_step(
        model,
        loader,
        **hyper,
        loss_fn=lambda outputs, y: depth_loss(outputs, y, kd_weight),  # type: ignore[arg-type]
    )
    return loss, seen, _arrays(model)


class WidthJob(Job[WidthOrder]):
    """``train.width``: the whole model at the order's width ratio."""

    order_type = WidthOrder

    def __init__(self, msg: Message) -> None:
        # Imported here: it needs torchvision (ViT), too slow for every message's import.
        from profl_strategy.methods.baselines.width import sub_key

        super().__init__(msg)
        self.key = sub_key(self.order.run.model, self.order.ratio)

    def need_mb(self) -> float:
        return estimate_full(self.key, self.order.run.train.batch_size).total_mb

    def what(self) -> str:
        return f"width {self.key.width:g}"

    def run(self, local: Local) -> Done:
        present = sorted({int(v) for v in local.labels})
        mask = present if self.order.label_mask else None
        hyper = self.order.run.train.hyper(device=local.device)
        loss, seen, arrays = fit_width(self.key, self.arrays, local.loader, hyper, mask)
        return Done(arrays, loss, seen, {"labels": tuple(present)})


class DepthJob(Job[DepthOrder]):
    """``train.depth``: blocks ``0 .. depth-1`` and the classifier heads the order names."""

    order_type = DepthOrder

    def need_mb(self) -> float:
        order = self.order
        return depth_need_mb(order.run.model, order.depth, order.heads, order.run.train.batch_size)

    def what(self) -> str:
        return f"depth {self.order.depth}"

    def run(self, local: Local) -> Done:
        order = self.order
        hyper = order.run.train.hyper(device=local.device, proximal_mu=0.0)
        loss, seen, arrays = fit_depth(
            order.run.model, order.depth, order.heads, order.kd_weight, self.arrays,
            local.loader, hyper,
        )  # fmt: skip
        return Done(arrays, loss, seen)


class BNStatisticsJob(Job[BNStatsQuery]):
    """``query.bnstats``: BN statistics of the global full-width model (static BN). It
    only reads the model: no allocator policy, seed or measurement."""

    order_type = BNStatsQuery
    trains = False

    def need_mb(self) -> float:
        return estimate_forward(self.order.run.model, self.order.run.train.batch_size).total_mb

    def what(self) -> str:
        return "a forward pass of the full model"

    def run(self, local: Local) -> Done:
        model = build_full_model(self.order.run.model.spec())
        model.load_state_dict(self.arrays.to_torch_state_dict(keep_input=False))
        stats = local_statistics(model, loader_images(local.loader), local.device)
        return Done(ArrayRecord({k: torch.from_numpy(v) for k, v in stats.items()}))

    def reply(
        self, done: Done, examples: int, need_mb: float, budget_mb: float, call: Call | None
    ) -> Reply:
        return Statistics(examples, need_mb)


def train_width(msg: Message, context: Context) -> Message:
    """Train the whole model at ``ratio`` times the run's width."""
    return handle(WidthJob, msg, context)


def train_depth(msg: Message, context: Context) -> Message:
    """Train blocks ``0 .. depth-1`` and the classifier heads the order names."""
    return handle(DepthJob, msg, context)


def bn_statistics(msg: Message, context: Context) -> Message:
    """BN statistics of the global full-width model on this node's data (static BN)."""
    return handle(BNStatisticsJob, msg, context)
