"""The baselines' handlers: ``train.width``, ``train.depth`` and ``query.bnstats``.

``train.width`` (AllSmall, HeteroFL, FedRolex) trains the whole model at a
width ratio; ``train.depth`` (DepthFL, InclusiveFL) trains the first ``k``
blocks with classifier heads. Like ProFL's ``train.step``, each handler reads
everything from its order, checks the sub-model against its own budget with the
same memory model the server used, and refuses what it cannot hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from torch import nn

from client_app.node import (
    device,
    local_loader,
    node_budget,
    prepare_node,
    refusal,
    run_measured,
)
from profl_strategy.baselines.depth import DepthSubModel, depth_loss, depth_need_mb
from profl_strategy.baselines.static_bn import loader_images, local_statistics
from profl_strategy.memory import estimate_forward, estimate_full
from profl_strategy.models import build_full_model
from profl_strategy.protocol import (
    ARRAYS,
    CONFIG,
    BNStatsQuery,
    DepthOrder,
    Statistics,
    WidthOrder,
)
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
    data is loaded."""
    from profl_strategy.baselines.width import LabelMasked

    model = build_full_model(key.spec())
    model.load_state_dict(arrays.to_torch_state_dict())
    trained = LabelMasked(model, mask, key.num_classes) if mask is not None else model
    loss, seen = train_step(trained, loader, **hyper)  # type: ignore[arg-type]
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
    model.load_state_dict(arrays.to_torch_state_dict())
    loss, seen = train_step(
        model,
        loader,  # type: ignore[arg-type]
        **hyper,
        loss_fn=lambda outputs, y: depth_loss(outputs, y, kd_weight),
    )
    return loss, seen, _arrays(model)


def train_width(msg: Message, context: Context) -> Message:
    """Train the whole model at ``ratio`` times the run's width."""
    # Imported here: it needs torchvision (ViT), too slow for every message's import.
    from profl_strategy.baselines.width import sub_key

    order = WidthOrder.from_record(msg.content[CONFIG])
    key = sub_key(order.run.model, order.ratio)
    budget = budget_mb, source = node_budget(context, order.run)
    prepare_node(context, source)
    need_mb = estimate_full(key, order.run.train.batch_size).total_mb
    refused = refusal(msg, order, need_mb, budget_mb, f"width {key.width:g}")
    if refused is not None:
        return refused
    where = device()

    def call() -> tuple[float, int, np.ndarray, ArrayRecord]:
        loader, labels, round_seed = local_loader(order, context)
        torch.manual_seed(round_seed)
        mask = sorted({int(v) for v in labels}) if order.label_mask else None
        hyper = order.run.train.hyper(device=where)
        loss, seen, arrays = fit_width(key, msg.content[ARRAYS], loader, hyper, mask)
        return loss, seen, labels, arrays

    done = run_measured(msg, context, order, budget, need_mb, call)
    if isinstance(done, Message):
        return done
    (loss, seen, labels, arrays), run = done
    present = tuple(sorted({int(v) for v in labels}))
    reply = run.trained(len(labels), loss, need_mb, budget_mb, seen, labels=present)
    return Message(reply.content(arrays), reply_to=msg)


def bn_statistics(msg: Message, context: Context) -> Message:
    """BN statistics of the global full-width model on this node's data (static BN)."""
    order = BNStatsQuery.from_record(msg.content[CONFIG])
    key = order.run.model
    budget_mb, _ = node_budget(context, order.run)
    need_mb = estimate_forward(key, order.run.train.batch_size).total_mb
    refused = refusal(msg, order, need_mb, budget_mb, "a forward pass of the full model")
    if refused is not None:
        return refused
    loader, labels, _ = local_loader(order, context)
    model = build_full_model(key.spec())
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    stats = local_statistics(model, loader_images(loader), device())
    arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in stats.items()})
    return Message(Statistics(len(labels), need_mb).content(arrays), reply_to=msg)


def train_depth(msg: Message, context: Context) -> Message:
    """Train blocks ``0 .. depth-1`` and the classifier heads the order names."""
    order = DepthOrder.from_record(msg.content[CONFIG])
    key = order.run.model
    budget = budget_mb, source = node_budget(context, order.run)
    prepare_node(context, source)
    need_mb = depth_need_mb(key, order.depth, order.heads, order.run.train.batch_size)
    refused = refusal(msg, order, need_mb, budget_mb, f"depth {order.depth}")
    if refused is not None:
        return refused
    where = device()

    def call() -> tuple[float, int, int, ArrayRecord]:
        loader, labels, round_seed = local_loader(order, context)
        torch.manual_seed(round_seed)
        hyper = order.run.train.hyper(device=where, proximal_mu=0.0)
        loss, seen, arrays = fit_depth(
            key, order.depth, order.heads, order.kd_weight, msg.content[ARRAYS], loader, hyper
        )
        return loss, seen, len(labels), arrays

    done = run_measured(msg, context, order, budget, need_mb, call)
    if isinstance(done, Message):
        return done
    (loss, seen, examples, arrays), run = done
    reply = run.trained(examples, loss, need_mb, budget_mb, seen)
    return Message(reply.content(arrays), reply_to=msg)
