"""Static BatchNorm (sBN) statistics for width-sliced models (HeteroFL, FedRolex).

A width-``r`` sub-model's BN layer sees the sum over ``r`` of the previous
layer's channels, so the running statistics it reports describe a different
network than the full-width global model. Averaging them per slice (like any
other entry) leaves the global model's BN statistics wrong whenever small
tiers dominate a round: measured on ``cifar10_cpu`` (ResNet18 width 0.125,
seed 0, round 50) HeteroFL scored 0.178 test accuracy with averaged
statistics and 0.321 with statistics recomputed for the full model; FedRolex
0.101 and 0.299.

HeteroFL's remedy (Diao et al., ICLR 2021, "static batch normalization"; kept
in FedRolex's code) is to query clients for the statistics of the *global*
model on their data. Each queried node runs the full-width model forward,
without autograd, over its local data with cumulative BN averaging; the server
pools the per-node means and variances weighted by examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

MEAN, VAR = "running_mean", "running_var"


def bn_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers that track running statistics, by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def statistics_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Running mean and variance of every tracking BN layer, by state-dict key."""
    return {
        f"{name}.{buf}": getattr(m, buf)
        for name, m in bn_layers(model).items()
        for buf in (MEAN, VAR)
    }


def local_statistics(
    model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device
) -> dict[str, np.ndarray]:
    """Per-channel BN mean and variance of ``model`` over ``batches``.

    Every BN layer's running statistics are reset and averaged cumulatively
    (``momentum=None``) over all batches, in training mode and without
    autograd, so nothing is kept for a backward pass.
    """
    layers = bn_layers(model)
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None
    model.to(device).train()
    with torch.no_grad():
        for x in batches:
            model(x.to(device))
    return {k: v.detach().cpu().numpy() for k, v in statistics_of(model).items()}


def loader_images(loader: DataLoader) -> Iterable[torch.Tensor]:
    """The image half of each ``(images, labels)`` batch."""
    return (x for x, _ in loader)


def pool_statistics(
    stats: Sequence[tuple[dict[str, np.ndarray], float]],
) -> dict[str, np.ndarray]:
    """Pool per-node BN statistics, weighted by each node's number of examples.

    The pooled variance adds the spread of the node means around the pooled
    mean (law of total variance), which matters on non-IID partitions.

    Raises
    ------
    ValueError
        If ``stats`` is empty, the weights do not sum to a positive number, or
        the nodes report different layers.
    """
    if not stats:
        raise ValueError("no BN statistics to pool")
    total = float(sum(w for _, w in stats))
    if not total > 0:
        raise ValueError(f"BN statistics need a positive total weight, got {total}")
    keys = set(stats[0][0])
    if any(set(s) != keys for s, _ in stats):
        raise ValueError("nodes reported BN statistics for different layers")
    out: dict[str, np.ndarray] = {}
    for key in keys:
        if not key.endswith("." + MEAN):
            continue
        layer = key[: -len(MEAN)]
        mean = sum(w * s[key] for s, w in stats) / total
        second = sum(w * (s[layer + VAR] + s[key] ** 2) for s, w in stats) / total
        out[key] = mean.astype(np.float32)  # type: ignore[union-attr]
        out[layer + VAR] = np.maximum(second - mean**2, 0.0).astype(np.float32)
    return out
