"""Training plans: ways to fit one ProFL step into a smaller memory budget.

A :class:`Plan` changes *how* a client trains a step, never *what* it trains.
Every technique below computes the same update as plain training, except
where noted:

- ``micro_batch``: split each batch into chunks and accumulate gradients.
  The gradient is the full-batch one (each chunk's mean loss is weighted by its
  share of the batch) for every layer without batch statistics. Trainable
  BatchNorm layers normalise each chunk with the chunk's own statistics, which
  is *not* exact ("ghost" batch norm); their running statistics are still
  updated once per batch with the full batch's mean and variance (see
  :mod:`profl_strategy.memory.plans.train`). Frozen prefixes run in eval mode and are
  unaffected. Activations shrink by ``batch / micro_batch``.
- ``checkpoint``: :func:`torch.utils.checkpoint.checkpoint` (non-reentrant)
  over segments of the active block; a segment starts at each child holding a
  convolution, linear layer or attention, so in-place activations stay with
  the layer before them. Only segment inputs are kept; backward recomputes one
  segment at a time. Exact, BatchNorm running statistics included (the
  recomputation's second update is undone).
- ``offload_prefix`` (stage 2, block > 0): per epoch, the frozen prefix runs
  alone on the device over the local data (its outputs go to host memory), then
  it leaves the device and the active block trains from the stored outputs.
  Exact: the prefix is frozen and in eval mode, so its outputs do not depend on
  when they are computed (the loader is iterated once per epoch, as before).
  Costs host memory of one epoch of prefix outputs.
- ``fused_step``: the optimiser step of each parameter runs in backward as soon
  as its gradient is complete, and the gradient is freed at once, so the
  active block's gradients are never all resident. Exact (no global gradient
  operation such as clipping is used). Not combinable with micro-batches,
  whose gradients must accumulate over the chunks.
- ``optimizer``: ``"sgd-momentum"`` keeps the momentum on the device;
  ``"sgd-momentum-host"`` keeps it in host memory and moves one parameter's
  buffer to the device for its update (exact, costs two transfers of the
  trainable weights' size per step); ``"sgd"`` drops momentum altogether. That
  changes the optimiser, so it is never exact and is only offered on request.

How a plan runs a step model is in :mod:`profl_strategy.memory.plans.forward`; what it
costs, and which plan fits a budget, in :mod:`profl_strategy.memory.plans.memory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from profl_strategy.engine.step import STAGE_GROW, Step

OPTIMIZERS = ("sgd-momentum", "sgd-momentum-host", "sgd")


@dataclass(frozen=True)
class Plan:
    """How a client trains one step; the default changes nothing.

    Parameters
    ----------
    micro_batch : int
        Chunk size for gradient accumulation; 0 (or at least the batch size)
        trains on the whole batch at once.
    checkpoint : bool
        Activation checkpointing over the active block's segments.
    offload_prefix : bool
        Stage 2 only: compute the frozen prefix's outputs first, then train the
        active block with the prefix off the device.
    optimizer : str
        ``"sgd-momentum"`` (as configured), ``"sgd-momentum-host"`` (momentum in
        host memory) or ``"sgd"`` (no momentum: changes the optimiser).
    fused_step : bool
        Update each parameter inside backward and free its gradient at once.
    """

    micro_batch: int = 0
    checkpoint: bool = False
    offload_prefix: bool = False
    optimizer: str = "sgd-momentum"
    fused_step: bool = False

    def __post_init__(self) -> None:
        if self.micro_batch < 0:
            raise ValueError(f"micro_batch must be >= 0, got {self.micro_batch}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.fused_step and self.micro_batch:
            raise ValueError("fused_step needs whole batches: micro-batches accumulate gradients")

    @property
    def exact(self) -> bool:
        """Same update as plain training (BatchNorm under micro-batches aside)."""
        return self.optimizer != "sgd"

    def applies_to(self, step: Step) -> bool:
        """Offloading needs a frozen prefix: stage 2 beyond the first block."""
        return not self.offload_prefix or (step.stage == STAGE_GROW and step.block > 0)

    def label(self) -> str:
        """Short name for logs and metrics, e.g. ``"mb16+ckpt"``; ``"plain"`` for none."""
        parts = [f"mb{self.micro_batch}"] if self.micro_batch else []
        parts += [name for name, field in _FLAG_FIELDS.items() if getattr(self, field)]
        if self.optimizer != "sgd-momentum":
            parts.append(_OPT_LABELS[self.optimizer])
        return "+".join(parts) or "plain"

    @classmethod
    def from_label(cls, label: str) -> Plan:
        """Inverse of :meth:`label` (for config records)."""
        kwargs: dict[str, object] = {}
        for part in filter(None, label.strip().split("+")):
            if part == "plain":
                continue
            if part.startswith("mb") and part[2:].isdigit():
                kwargs["micro_batch"] = int(part[2:])
            elif part in _FLAG_FIELDS:
                kwargs[_FLAG_FIELDS[part]] = True
            elif part in _OPT_FROM_LABEL:
                kwargs["optimizer"] = _OPT_FROM_LABEL[part]
            else:
                raise ValueError(f"unknown plan part {part!r} in {label!r}")
        return cls(**kwargs)  # type: ignore[arg-type]


_FLAG_FIELDS = {"ckpt": "checkpoint", "offload": "offload_prefix", "fused": "fused_step"}
_OPT_LABELS = {"sgd-momentum-host": "hostmom", "sgd": "nomom"}
_OPT_FROM_LABEL = {v: k for k, v in _OPT_LABELS.items()}

# Relative step-time penalties used to order candidates (fastest first). They
# are priors; only their order matters, and ``python -m benchmarks.memory.plans
# --techniques`` measures it. Fused and per-parameter updates add Python work
# per parameter; host momentum adds two transfers of the trainable weights;
# offloading adds a store and a reload of the prefix outputs; checkpointing
# re-runs the active block's forward; each halving of the micro-batch doubles
# the kernel launches. Measured on an H100 at batch 64 (width 1, where these
# models are launch-bound, so micro-batches cost more than on a slow device):
# fused 1.0-1.6x, offload 0.9-1.2x, host momentum 1.2-1.7x, checkpointing
# 1.8-2.6x, micro-batches of 1/2, 1/4, 1/8 of the batch 2.2-3.2x, 4.1-5.1x and
# 8.5-11.6x.
_COST_FUSED = 0.05
_COST_HOST_MOMENTUM = 0.15
_COST_OFFLOAD = 0.2
_COST_CHECKPOINT = 0.35
_COST_PER_HALVING = 0.45


def relative_cost(plan: Plan, batch_size: int) -> float:
    """Expected step time of ``plan`` relative to plain training (a prior, not a measurement)."""
    cost = 1.0
    if 0 < plan.micro_batch < batch_size:
        cost += _COST_PER_HALVING * math.log2(batch_size / plan.micro_batch)
    cost += _COST_CHECKPOINT * plan.checkpoint + _COST_OFFLOAD * plan.offload_prefix
    cost += _COST_FUSED * plan.fused_step
    cost += _COST_HOST_MOMENTUM * (plan.optimizer == "sgd-momentum-host")
    return cost


def candidate_plans(
    batch_size: int,
    allow_checkpoint: bool = True,
    allow_offload: bool = True,
    *,
    allow_fused: bool = True,
    allow_host_momentum: bool = True,
    allow_inexact: bool = False,
    min_micro_batch: int = 4,
) -> list[Plan]:
    """Every plan worth trying for ``batch_size``, fastest first.

    Micro-batches halve the batch down to ``min_micro_batch``. Exact plans come
    before inexact ones (``optimizer="sgd"``, only with ``allow_inexact``), then
    by :func:`relative_cost`; the no-change plan is always first.
    """
    micro = [0]
    m = batch_size // 2
    while m >= min_micro_batch:
        micro.append(m)
        m //= 2
    optimizers = ["sgd-momentum"] + ["sgd-momentum-host"] * allow_host_momentum
    optimizers += ["sgd"] * allow_inexact
    plans = {
        Plan(mb, ckpt, off, opt, fused)
        for mb in micro
        for ckpt in (False, True)[: 1 + allow_checkpoint]
        for off in (False, True)[: 1 + allow_offload]
        for opt in optimizers
        for fused in (False, True)[: 1 + (allow_fused and mb == 0)]
    }
    return sorted(plans, key=lambda p: (not p.exact, relative_cost(p, batch_size), p.label()))
