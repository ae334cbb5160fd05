"""What every ClientApp handler needs from its node: the budget, the data, the device.

Handlers read the run from the message (:class:`~profl_strategy.engine.protocol.RunSpec`),
never from ``context.run_config``, and check every order against the node's
own budget with the same memory model the server used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.common import log
from torch.utils.data import DataLoader

from profl_strategy.engine.budgets import (
    NodeConfigError,
    memory_mb_of,
    node_budget_mb,
    partition_of,
)
from profl_strategy.engine.protocol import Order, Refused, RunSpec, Trained
from profl_strategy.memory.device import DeviceMemoryError, auto_budget_mb
from profl_strategy.memory.guard import OverBudget, budget_guard
from profl_strategy.memory.model import cuda_workspace_mb
from profl_strategy.memory.peak import Measurement, PeakMeter, idle_rss_mb
from profl_strategy.memory.runtime import CPU_CALL_ALLOWANCE_MB, prepare_process, set_policy

_logged: set[str] = set()


def in_process_engine() -> bool:
    """True in this app's in-process engine (:mod:`server_app.inprocess`): the server and
    every node share one process."""
    return os.environ.get("PROFL_INPROCESS_ENGINE") == "1"


def in_simulation() -> bool:
    """True inside Flower's simulation engine (a Ray actor) or the in-process engine."""
    ray = sys.modules.get("ray")  # only if the simulation engine loaded it
    return (ray is not None and ray.is_initialized()) or in_process_engine()


def node_budget(context: Context, run: RunSpec, load: bool = True) -> tuple[float, str]:
    """The MB the memory model's estimates may use on this node, and where it came from.

    A real cap (``memory-mb`` in the node config) on a CUDA device also has to
    hold PyTorch's cuBLAS workspaces, which the estimates leave out: they are
    taken off here, so the strategy and this node compare the same figures.
    Raises :class:`~profl_strategy.engine.budgets.NodeConfigError` (naming this node) for
    a config the run cannot use, so no handler ever trains with a made-up budget.
    """
    config, node = dict(context.node_config), str(context.node_id)
    auto = str(config.get("memory-mb", "")).strip().lower() == "auto"
    if "memory-mb" not in config and not in_simulation():
        raise NodeConfigError(
            f"SuperNode {node}: node-config has no memory-mb. A deployed node trains only "
            "within a budget it states (simulated memory profiles are for simulation): add "
            "memory-mb=auto to take what this device can give, or memory-mb=<MB>, e.g. "
            '--node-config "partition-id=0 num-partitions=3 memory-mb=auto"'
        )
    partition_of(config, node)  # checked before its data is read
    if "memory-mb" in config and not auto:
        memory_mb_of(config, node)
    if "memory-mb" not in config:  # simulated: a tier holds a share of full training's
        # model memory, its data and the runtime besides (not taken off)
        return node_budget_mb(config, run.memory, run.full_peak_mb, run.seed, node_id=node)
    overhead = call_overhead_mb(run, context, load)
    if auto:
        try:
            mb, source = auto_budget_mb()
        except DeviceMemoryError as err:
            raise NodeConfigError(f"SuperNode {node}: {err}") from None
    else:
        mb, source = node_budget_mb(config, run.memory, run.full_peak_mb, run.seed, node_id=node)
    if torch.cuda.is_available():
        mb -= cuda_workspace_mb(torch.cuda.get_device_capability())
    if source not in _logged:
        _logged.add(source)
        log(INFO, "SuperNode %s: budget %.1f MB (%s), %.1f MB of it for data and runtime",
            node, mb, source, overhead)  # fmt: skip
    if mb - overhead <= 0:
        raise NodeConfigError(
            f"SuperNode {node}: a budget of {mb:.1f} MB ({source}) does not cover what a "
            f"train call holds besides the model, {overhead:.1f} MB (this node's data and "
            "the runtime allowance): raise memory-mb, or use memory-mb=auto"
        )
    return mb - overhead, source


def call_overhead_mb(run: RunSpec, context: Context, load: bool = True) -> float:
    """What a train call holds besides the model's figure: on the CPU, its data
    (:func:`data_mb`) and the runtime allowance
    (:data:`~profl_strategy.memory.runtime.CPU_CALL_ALLOWANCE_MB`); on CUDA, nothing
    on the device."""
    if device().type != "cpu":
        return 0.0
    return data_mb(run, context, load) + CPU_CALL_ALLOWANCE_MB


def guard_on(context: Context, source: str) -> bool:
    """Whether this node holds calls to their budget: a strict allocator
    (:func:`~profl_strategy.memory.runtime.prepare_process`) and a guard that stops a call
    past it. ``memory-guard`` in the node config (or ``PROFL_MEMORY_GUARD`` for every
    node of a simulation) decides; by default on where the budget is the device's
    own (deployment), off for simulated profiles (a strict allocator costs time)."""
    value = str(context.node_config.get("memory-guard", os.environ.get("PROFL_MEMORY_GUARD", "")))
    value = value.strip().lower()
    if value in ("true", "1", "on"):
        return True
    if value in ("false", "0", "off"):
        return False
    return source == "node-config" or source.startswith("auto")


@dataclass(frozen=True)
class Call:
    """A measured train call: its peak next to the budget and the prediction it was held to.

    ``budget_mb`` and ``predicted_mb`` are whole-call figures (everything over the
    idle ClientApp): the node's training budget and the model's need, each plus
    :func:`call_overhead_mb`.
    """

    measurement: Measurement
    budget_mb: float
    predicted_mb: float
    strict: bool

    def trained(
        self, examples: int, loss: float, need_mb: float, budget_mb: float, seen: int, **more: Any
    ) -> Trained:
        """The reply of a call that trained, with its measured peak and whole-call figures."""
        return Trained(examples, loss, need_mb, budget_mb, self.measurement.peak_mb, seen,
                       call_budget_mb=self.budget_mb, call_predicted_mb=self.predicted_mb,
                       memory_policy="strict" if self.strict else "fast", **more)  # fmt: skip


def received_mb(msg: Message) -> float:
    """MB of the arrays a message brought: the call holds them until it has loaded them,
    so its peak counts them."""
    records = msg.content.array_records.values()
    return sum(len(a.data) for record in records for a in record.values()) / 2**20


def prepare_node(context: Context, source: str) -> bool:
    """Set this node's allocator policy before anything is estimated or trained; return
    whether it is strict (:func:`guard_on`).

    On the CPU, estimating a call runs its training code on tiny batches. Under glibc's
    default policy the weight-sized blocks it frees stay in the heap, resident, and
    later calls reuse them: the process grows past what any call needs. A strict
    policy (:func:`~profl_strategy.memory.runtime.set_policy`) returns them.
    """
    strict = guard_on(context, source)
    if device().type == "cpu":
        set_policy(strict)
    return strict


def run_measured(
    msg: Message,
    context: Context,
    order: Order,
    budget: tuple[float, str],
    need_mb: float,
    call: Callable[[], Any],
) -> tuple[Any, Call] | Message:
    """Run ``call`` measured (:mod:`profl_strategy.memory.peak`) after preparing the process
    (:func:`~profl_strategy.memory.runtime.prepare_process`, once). With the guard on and the
    budget enforced, a call whose peak passes its budget is stopped and answered with a
    refusal that gives measured and budget."""
    where, (budget_mb, source) = device(), budget
    overhead = call_overhead_mb(order.run, context)
    strict = prepare_node(context, source)
    limit = budget_mb + overhead if strict and order.enforce_budget else None
    held = received_mb(msg)
    if where.type == "cpu":
        prepare_process(order.run.model, strict=strict, held_mb=held)
    try:
        # Sharing a process with other nodes (a Ray actor) or the server, a node has no idle
        # size of its own: its peak is counted from the resident size at the call's start.
        shared = in_simulation() and where.type == "cpu"
        with PeakMeter(where, limit, held if shared else None) as meter, budget_guard(meter):
            out = call()
    except OverBudget as over:
        log(WARNING, "stopped: %.1f MB measured passed the budget of %.1f MB (%.1f MB "
            "predicted)", over.measured_mb, over.budget_mb, need_mb + overhead)  # fmt: skip
        reason = f"over budget while training: measured {over.measured_mb:.1f} MB"
        refused = Refused(need_mb, budget_mb, reason, over.measured_mb)
        return Message(refused.content(), reply_to=msg)
    assert meter.result is not None
    if "peak" not in _logged:
        _logged.add("peak")
        log(INFO, "first call's peak %s over %s; idle ClientApp %.0f MB, %s allocator policy",
            meter.result.describe(), "its start" if shared else "the idle ClientApp",
            idle_rss_mb(), "strict" if strict else "fast")  # fmt: skip
    return out, Call(meter.result, budget_mb + overhead, need_mb + overhead, strict)


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


def _partition(run: RunSpec, context: Context) -> tuple[np.ndarray, np.ndarray, int, int]:
    """This node's training images and labels (subsampled), its partition id, and the
    bytes of the whole partition as read. A ``data-dir`` in the node's config wins; the
    server's validation rows (``run.data.val_fraction``) are never in it."""
    # Imported here: the data stack (datasets, pyarrow, pandas, flwr-datasets,
    # torchvision) takes seconds, and a deployed ClientApp starts a fresh
    # process for every message, budget queries included.
    from profl_strategy.task.dataset import load_partition, subsample_rows

    node, data, seed = context.node_config, run.data, run.seed
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
        val_fraction=data.val_fraction,
    )
    read = images.nbytes + labels.nbytes
    if data.subsample < 1:
        keep = subsample_rows(len(labels), data.subsample, seed=seed, partition_id=pid)
        images, labels = images[keep], labels[keep]
    return images, labels, pid, read


def _loader(run: RunSpec, images: np.ndarray, labels: np.ndarray, seed: int) -> DataLoader:
    from profl_strategy.task.dataset import make_loader

    return make_loader(
        images,
        labels,
        run.data.dataset,
        batch_size=run.train.batch_size,
        train=True,
        seed=seed,
        channels_last=run.train.channels_last,
    )


def local_loader(order: Order, context: Context) -> tuple[DataLoader, np.ndarray, int]:
    """This node's training loader (seeded per round), its labels, and the round seed."""
    images, labels, pid, _ = _partition(order.run, context)
    round_seed = order.run.seed * 100_003 + order.server_round * 1_009 + pid
    return _loader(order.run, images, labels, round_seed), np.asarray(labels), round_seed


_data_mb: dict[tuple[Any, ...], float] = {}


def data_mb(run: RunSpec, context: Context, load: bool = True) -> float:
    """MB a training call holds for its data, whatever the model: the dataset the loader
    serves from (:func:`~profl_strategy.task.images.held_bytes`) and, when subsampling,
    the whole partition it was cut from. The memory model leaves this to the node, which
    alone knows its partition; its budget for the model is ``memory-mb`` minus this.

    Without ``load`` (a budget query, which should stay light: a deployed ClientApp runs
    each message in a fresh process), local data is read from the disk cache with numpy,
    or split once (then it is cached); Hub data is left to the first train call, whose
    reply gives the server the budget with it.
    """
    from profl_strategy.task.images import held_bytes

    cfg = context.node_config
    key = (run.data, run.seed, cfg.get("partition-id"), cfg.get("num-partitions"),
           cfg.get("data-dir"))  # fmt: skip
    if key not in _data_mb:
        local = bool(str(cfg.get("data-dir", run.data.data_dir)))
        cached = _cached_partition(run, context) if local and not load else None
        if cached is not None:
            images, read = cached
        elif load or local:  # splits it once, then it is cached on disk
            images, _, _, read = _partition(run, context)
        else:  # Hub data (naming its cache asks the Hub): counted by the first train call
            return 0.0
        held = held_bytes(images, run.data.dataset)
        _data_mb[key] = (held + (read if run.data.subsample < 1 else 0)) / 2**20
    return _data_mb[key]


def _cached_partition(run: RunSpec, context: Context) -> tuple[np.ndarray, int] | None:
    """The node's training images (subsampled) and the partition's bytes, from the disk
    cache alone; None if the partition has not been cached yet."""
    from profl_strategy.task.dataset_info import Partition, get_info
    from profl_strategy.task.partition_cache import cache_files, read_partition

    node, data = context.node_config, run.data
    pid, n = int(node["partition-id"]), int(node["num-partitions"])
    part = Partition(data.dataset, pid, n, partitioner=data.partitioner, alpha=data.alpha,
                     shards_per_partition=data.shards_per_partition, seed=run.seed,
                     data_dir=str(node.get("data-dir", data.data_dir)),
                     val_fraction=data.val_fraction)  # fmt: skip
    c, h, w = get_info(data.dataset).input_shape
    found = read_partition(cache_files(part), (h, w, c))
    if found is None:
        return None
    images, labels = found  # subsampled or not: the whole partition bounds the kept rows
    return images, images.nbytes + labels.nbytes


def device() -> torch.device:
    """CUDA if there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
