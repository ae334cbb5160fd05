"""What every ClientApp handler needs from its node: the budget, the data, the device.

Handlers read the run from the message (:class:`~profl_strategy.protocol.RunSpec`),
never from ``context.run_config``, and check every order against the node's
own budget with the same memory model the server used.
"""

from __future__ import annotations

from logging import WARNING

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.common import log
from torch.utils.data import DataLoader

from profl_strategy.budgets import node_budget_mb
from profl_strategy.memory import cuda_workspace_mb
from profl_strategy.protocol import Order, Refused, RunSpec


def node_budget(context: Context, run: RunSpec) -> tuple[float, str]:
    """The MB the memory model's estimates may use on this node, and where it came from.

    A real cap (``memory-mb`` in the node config) on a CUDA device also has to
    hold PyTorch's cuBLAS workspaces, which the estimates leave out: they are
    taken off here, so the strategy and this node compare the same figures.
    Raises :class:`~profl_strategy.budgets.NodeConfigError` (naming this node) for
    a config the run cannot use, so no handler ever trains with a made-up budget.
    """
    mb, source = node_budget_mb(
        dict(context.node_config), run.memory, run.full_peak_mb, run.seed, node_id=context.node_id
    )
    if source == "node-config" and torch.cuda.is_available():
        mb -= cuda_workspace_mb(torch.cuda.get_device_capability())
    return mb, source


def refusal(
    msg: Message, order: Order, own_mb: float, budget_mb: float, what: str
) -> Message | None:
    """A refusal if this node cannot or must not run ``order`` (None: go ahead).

    It refuses when its own estimate contradicts the server's (other code) or,
    unless the order says otherwise, when the estimate exceeds its budget.
    """
    reason = order.disagrees(own_mb)
    if reason is None and order.enforce_budget and own_mb > budget_mb:
        reason = "over budget"
    if reason is None:
        return None
    log(WARNING, "%s needs %.1f MB, budget %.1f MB: refused (%s)", what, own_mb, budget_mb, reason)
    return Message(Refused(own_mb, budget_mb, reason).content(), reply_to=msg)


def local_loader(order: Order, context: Context) -> tuple[DataLoader, np.ndarray, int]:
    """This node's training loader (seeded per round), its labels, and the round seed.

    A ``data-dir`` in the node's own config (deployment) wins over the run's.
    """
    # Imported here: the data stack (datasets, pyarrow, pandas, flwr-datasets,
    # torchvision) takes seconds, and a deployed ClientApp starts a fresh
    # process for every message, budget queries included.
    from profl_strategy.task.dataset import load_partition, make_loader, subsample_rows

    node, data, seed = context.node_config, order.run.data, order.run.seed
    pid, n = int(node["partition-id"]), int(node["num-partitions"])
    images, labels = load_partition(
        data.dataset,
        pid,
        n,
        partitioner=data.partitioner,
        alpha=data.alpha,
        shards_per_partition=data.shards_per_partition,
        seed=seed,
        data_dir=str(node.get("data-dir", data.data_dir)),
    )
    if data.subsample < 1:
        keep = subsample_rows(len(labels), data.subsample, seed=seed, partition_id=pid)
        images, labels = images[keep], labels[keep]
    round_seed = seed * 100_003 + order.server_round * 1_009 + pid
    loader = make_loader(
        images,
        labels,
        data.dataset,
        batch_size=order.run.train.batch_size,
        train=True,
        seed=round_seed,
        channels_last=order.run.train.channels_last,
    )
    return loader, np.asarray(labels), round_seed


def device() -> torch.device:
    """CUDA if there is one (its peak counter reset), else the CPU."""
    found = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if found.type == "cuda":
        torch.cuda.reset_peak_memory_stats(found)
    return found


def peak_mb(where: torch.device) -> float:
    """CUDA peak since :func:`device` (0 on the CPU: no measured figure there)."""
    return torch.cuda.max_memory_allocated(where) / 2**20 if where.type == "cuda" else 0.0
