"""ClientApp handlers of the baselines, on the same ``app`` as ProFL's.

``train.width`` (AllSmall, HeteroFL, FedRolex) trains the whole model at a
width ratio; ``train.depth`` (DepthFL, InclusiveFL) trains the first ``k``
blocks with classifier heads. Like ProFL's ``train.step``, each handler reads
everything from the message, checks the sub-model against its own budget with
the same memory model the server used, and refuses what it cannot hold.

Registered by importing this module; ``client_app/app.py`` does so at its end.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import log
from torch import nn

from client_app.app import _budget, app, local_loader
from client_app.train import train_step
from profl_strategy.baselines.depth import DepthSubModel, depth_loss, depth_need_mb
from profl_strategy.baselines.static_bn import loader_images, local_statistics
from profl_strategy.memory import ModelKey, estimate_forward, estimate_full
from profl_strategy.models import build_full_model
from profl_strategy.protocol import model_key_of

Loss = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]


def _refusal(msg: Message, need_mb: float, budget_mb: float, what: str) -> Message:
    log(WARNING, "%s needs %.1f MB > budget %.1f MB: refused", what, need_mb, budget_mb)
    refusal = MetricRecord({"refused": 1, "need-mb": need_mb, "memory-mb": budget_mb})
    return Message(RecordDict({"metrics": refusal}), reply_to=msg)


def _over_budget(cfg: ConfigRecord, need_mb: float, budget_mb: float) -> bool:
    return bool(cfg.get("enforce-budget", True)) and need_mb > budget_mb


def _device() -> torch.device:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return device


def _peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def _reply(msg: Message, model: nn.Module, metrics: dict[str, float | int | list[int]]) -> Message:
    state = model.state_dict()
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in state.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.train("width")
def train_width(msg: Message, context: Context) -> Message:
    """Train the whole model at ``width-ratio`` times the run's width."""
    # Imported here: it needs torchvision (ViT), too slow for every message's import.
    from profl_strategy.baselines.width import LabelMasked, sub_key

    cfg = msg.content["config"]
    key: ModelKey = sub_key(model_key_of(cfg), float(cfg["width-ratio"]))
    budget_mb, _ = _budget(context, cfg)
    need_mb = estimate_full(key, int(cfg["batch-size"])).total_mb
    if _over_budget(cfg, need_mb, budget_mb):
        return _refusal(msg, need_mb, budget_mb, f"width {key.width:g}")
    loader, labels, round_seed = local_loader(cfg, context)
    torch.manual_seed(round_seed)
    model = build_full_model(key.spec())
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    present = sorted({int(v) for v in labels})
    trained: nn.Module = model
    if bool(cfg.get("label-mask", False)):
        trained = LabelMasked(model, present, key.num_classes)
    device = _device()
    loss, seen = train_step(
        trained,
        loader,
        epochs=int(cfg["local-epochs"]),
        lr=float(cfg["lr"]),
        momentum=float(cfg["momentum"]),
        weight_decay=float(cfg["weight-decay"]),
        proximal_mu=float(cfg["proximal-mu"]),
        device=device,
    )
    return _reply(
        msg,
        model,
        {
            "num-examples": len(labels),
            "train-loss": loss,
            "need-mb": need_mb,
            "memory-mb": budget_mb,
            "peak-mb-measured": _peak_mb(device),
            "examples-seen": seen,
            "labels": present,
        },
    )


@app.query("bnstats")
def bn_statistics(msg: Message, context: Context) -> Message:
    """BN statistics of the global full-width model on this node's data (static BN)."""
    cfg = msg.content["config"]
    key = model_key_of(cfg)
    budget_mb, _ = _budget(context, cfg)
    need_mb = estimate_forward(key, int(cfg["batch-size"])).total_mb
    if _over_budget(cfg, need_mb, budget_mb):
        return _refusal(msg, need_mb, budget_mb, "a forward pass of the full model")
    loader, labels, _ = local_loader(cfg, context)
    model = build_full_model(key.spec())
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    stats = local_statistics(model, loader_images(loader), _device())
    arrays = ArrayRecord({k: torch.from_numpy(v) for k, v in stats.items()})
    metrics = MetricRecord({"num-examples": len(labels), "need-mb": need_mb})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.train("depth")
def train_depth(msg: Message, context: Context) -> Message:
    """Train blocks ``0 .. depth-1`` and the classifier heads the message names."""
    cfg = msg.content["config"]
    key = model_key_of(cfg)
    depth, heads = int(cfg["depth"]), tuple(int(h) for h in cfg["heads"])
    budget_mb, _ = _budget(context, cfg)
    need_mb = depth_need_mb(key, depth, heads, int(cfg["batch-size"]))
    if _over_budget(cfg, need_mb, budget_mb):
        return _refusal(msg, need_mb, budget_mb, f"depth {depth}")
    loader, labels, round_seed = local_loader(cfg, context)
    torch.manual_seed(round_seed)
    model = DepthSubModel(key.spec(), depth, heads)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    kd_weight = float(cfg.get("kd-weight", 0.0))
    device = _device()
    loss, seen = train_step(
        model,
        loader,
        epochs=int(cfg["local-epochs"]),
        lr=float(cfg["lr"]),
        momentum=float(cfg["momentum"]),
        weight_decay=float(cfg["weight-decay"]),
        proximal_mu=0.0,
        device=device,
        loss_fn=lambda outputs, y: depth_loss(outputs, y, kd_weight),
    )
    return _reply(
        msg,
        model,
        {
            "num-examples": len(labels),
            "train-loss": loss,
            "need-mb": need_mb,
            "memory-mb": budget_mb,
            "peak-mb-measured": _peak_mb(device),
            "examples-seen": seen,
        },
    )
