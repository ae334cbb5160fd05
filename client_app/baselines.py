"""The baselines' handlers: ``train.width``, ``train.depth`` and ``query.bnstats``.

``train.width`` (AllSmall, HeteroFL, FedRolex) trains the whole model at a
width ratio; ``train.depth`` (DepthFL, InclusiveFL) trains the first ``k``
blocks with classifier heads. Like ProFL's ``train.step``, each handler reads
everything from its order, checks the sub-model against its own budget with the
same memory model the server used, and refuses what it cannot hold.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message
from torch import nn

from client_app.node import device, local_loader, node_budget, peak_mb, refusal
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
    Trained,
    WidthOrder,
)
from profl_strategy.task.train import train_step


def _trained(msg: Message, model: nn.Module, reply: Trained) -> Message:
    state = model.state_dict()
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in state.items()})
    return Message(reply.content(arrays), reply_to=msg)


def train_width(msg: Message, context: Context) -> Message:
    """Train the whole model at ``ratio`` times the run's width."""
    # Imported here: it needs torchvision (ViT), too slow for every message's import.
    from profl_strategy.baselines.width import LabelMasked, sub_key

    order = WidthOrder.from_record(msg.content[CONFIG])
    key = sub_key(order.run.model, order.ratio)
    budget_mb, _ = node_budget(context, order.run)
    need_mb = estimate_full(key, order.run.train.batch_size).total_mb
    refused = refusal(msg, order, need_mb, budget_mb, f"width {key.width:g}")
    if refused is not None:
        return refused
    loader, labels, round_seed = local_loader(order, context)
    torch.manual_seed(round_seed)
    model = build_full_model(key.spec())
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    present = tuple(sorted({int(v) for v in labels}))
    trained: nn.Module = model
    if order.label_mask:
        trained = LabelMasked(model, list(present), key.num_classes)
    where = device()
    loss, seen = train_step(trained, loader, **order.run.train.hyper(device=where))
    reply = Trained(len(labels), loss, need_mb, budget_mb, peak_mb(where), seen, present)
    return _trained(msg, model, reply)


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
    budget_mb, _ = node_budget(context, order.run)
    need_mb = depth_need_mb(key, order.depth, order.heads, order.run.train.batch_size)
    refused = refusal(msg, order, need_mb, budget_mb, f"depth {order.depth}")
    if refused is not None:
        return refused
    loader, labels, round_seed = local_loader(order, context)
    torch.manual_seed(round_seed)
    model = DepthSubModel(key.spec(), order.depth, order.heads)
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    where = device()
    kd = order.kd_weight
    loss, seen = train_step(
        model,
        loader,
        **order.run.train.hyper(device=where, proximal_mu=0.0),
        loss_fn=lambda outputs, y: depth_loss(outputs, y, kd),
    )
    reply = Trained(len(labels), loss, need_mb, budget_mb, peak_mb(where), seen)
    return _trained(msg, model, reply)
