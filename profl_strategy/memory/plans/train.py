"""Local training of one ProFL step under a memory-saving :class:`.plan.Plan`.

:func:`train_with_plan` has the contract of :func:`profl_strategy.task.train.train_step`
(mean loss, examples seen) and, for every exact plan, the same result up to
floating-point rounding. What each technique does on the client:

Micro-batches
    Each loader batch of ``n`` samples is cut into chunks of ``micro_batch``;
    chunk ``c`` contributes ``mean_loss(c) * len(c) / n`` and is backpropagated
    at once, so gradients accumulate in ``.grad`` and sum to the full-batch
    mean-loss gradient; the optimiser steps once per batch. Only one chunk's
    activations are alive at a time, and only one chunk is on the device.

    BatchNorm is the exception. A trainable BatchNorm in training mode
    normalises each chunk with that chunk's mean and variance, and its backward
    couples only the samples of a chunk, so the gradient differs from the
    full-batch one ("ghost batch norm"; measured in ``tests/unit/test_plans.py``:
    see the report there). Its *running* statistics, however, would be
    updated once per chunk with chunk statistics, i.e. more often and with a
    higher-variance estimate; instead :class:`FullBatchNormStats` turns the
    layers' own update off, records each chunk's per-channel mean and variance,
    and applies a single update per batch with the full batch's mean and
    unbiased variance (Chan's parallel formula), as plain training would.
    Frozen prefixes (stage 2) run in eval mode and are unaffected; layers
    without batch statistics (LayerNorm, ViT) are exact.

Checkpointing
    The active block runs as checkpointed segments
    (:class:`~profl_strategy.memory.plans.forward.PlanForward`, ``use_reentrant=False``). The
    gradient is exactly the plain one; the RNG state is preserved for the
    recomputation (``preserve_rng_state``), so dropout masks match, and the
    recomputation does not update BatchNorm running statistics a second time.

Offloaded prefix (stage 2)
    Per epoch, the trainable modules and their optimiser state leave the
    device, the frozen prefix alone computes its outputs batch by batch (in
    chunks of ``micro_batch`` when set) and stores them in host memory; then
    the prefix leaves the device, the trainable modules return and train from
    the stored outputs in the same batch order. The loader is iterated once per
    epoch, as in plain training, so augmentation and shuffling are unchanged;
    this assumes the model's forward draws no random numbers from the global
    generator the loader shares (no dropout in the active step; true for the
    ResNet, VGG and CNN specs and the default ViT). After training the prefix
    stays on the host; callers read only trainable keys.

Fused step
    Each trainable parameter has its own SGD optimiser, stepped from a
    post-accumulate-grad hook as soon as its gradient is complete; the gradient
    is then freed. FedProx's gradient ``mu * (w - w_global)`` is added to each
    parameter's gradient before its step (the same value autograd gives for
    ``mu / 2 * ||w - w_global||^2``, without keeping that graph).

Host momentum
    Momentum buffers live in pinned host memory; each parameter's buffer is
    copied to the device for its update and back after it (asynchronously,
    on the same stream as the update).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.sgd import sgd as sgd_update

from profl_strategy.memory.plans.forward import PlanForward, in_recompute, trainable_part
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.methods.profl.step_model import StepModel

Batch = tuple[torch.Tensor, torch.Tensor]
HOST = torch.device("cpu")


class FullBatchNormStats:
    """Update BatchNorm running statistics once per batch, from all its micro-batches.

    Each trainable BatchNorm's own update is switched off; a forward pre-hook
    records every chunk's per-channel count, mean and biased variance
    (recomputations by checkpointing are skipped), and :meth:`flush` merges
    them into the batch's mean and unbiased variance and applies
    ``running = (1 - momentum) * running + momentum * batch_stat`` once, with
    the same momentum (or cumulative average when ``momentum is None``) and
    ``num_batches_tracked`` increment as a full-batch forward.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [
            m
            for m in model.modules()
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
        ]
        self.chunks: dict[nn.Module, list[tuple[int, torch.Tensor, torch.Tensor]]] = {
            bn: [] for bn in self.layers
        }
        self.handles = [bn.register_forward_pre_hook(self._record) for bn in self.layers]
        for bn in self.layers:
            bn.track_running_stats = False

    def _record(self, bn: nn.Module, args: tuple) -> None:
        if in_recompute():
            return
        x = args[0].detach()
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        self.chunks[bn].append((x.numel() // x.shape[1], mean, var))

    @torch.no_grad()
    def flush(self) -> None:
        """Apply one running-statistics update per layer for the batch just seen."""
        for bn in self.layers:
            parts = self.chunks[bn]
            if not parts:
                continue
            n = sum(c for c, _, _ in parts)
            mean = sum(c * m for c, m, _ in parts) / n
            m2 = sum(c * (v + (m - mean).square()) for c, m, v in parts)
            bn.num_batches_tracked.add_(1)  # type: ignore[union-attr]
            f = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)  # type: ignore[arg-type]
            bn.running_mean.mul_(1 - f).add_(mean.to(bn.running_mean.dtype), alpha=f)  # type: ignore[union-attr]
            unbiased = m2 / max(n - 1, 1)
            bn.running_var.mul_(1 - f).add_(unbiased.to(bn.running_var.dtype), alpha=f)  # type: ignore[union-attr]
            parts.clear()

    def close(self) -> None:
        """Give the layers their own updates back."""
        for h in self.handles:
            h.remove()
        for bn in self.layers:
            bn.track_running_stats = True


class Stepper:
    """SGD over the trainable parameters, as the plan keeps it.

    One :class:`torch.optim.SGD` over all parameters (as ``train_step``) unless
    the plan fuses updates into backward or keeps momentum on the host; then
    each parameter is updated on its own by :func:`torch.optim.sgd.sgd`, the
    function ``SGD.step`` calls, with the same arguments and the same kernel
    choice, so each update touches one parameter's gradient and buffer.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        plan: Plan,
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
        proximal_mu: float,
    ) -> None:
        self.params = params
        self.lr, self.weight_decay = lr, weight_decay
        self.momentum = 0.0 if plan.optimizer == "sgd" else momentum
        self.host = plan.optimizer == "sgd-momentum-host" and self.momentum > 0
        self.mu = proximal_mu
        self.anchor = {p: p.detach().clone() for p in params} if proximal_mu > 0 else {}
        self.per_param = plan.fused_step or self.host
        self.joint = torch.optim.SGD(
            params, lr=lr, momentum=self.momentum, weight_decay=weight_decay
        )
        self.buffers: dict[nn.Parameter, torch.Tensor] = {}
        self.fused = plan.fused_step
        self.handles = (
            [p.register_post_accumulate_grad_hook(self._step_param) for p in params]
            if self.fused
            else []
        )

    @torch.no_grad()
    def proximal_term(self) -> float:
        """``mu / 2 * ||w - w_global||^2`` at the current weights (0 without FedProx)."""
        if not self.anchor:
            return 0.0
        prox = sum(float((p - a).pow(2).sum()) for p, a in self.anchor.items())
        return self.mu / 2 * prox

    @torch.no_grad()
    def _add_proximal(self, p: nn.Parameter) -> None:
        if self.anchor and p.grad is not None:
            p.grad.add_((p - self.anchor[p]).mul_(self.mu))

    @torch.no_grad()
    def _step_param(self, p: nn.Parameter) -> None:
        if p.grad is None:
            return
        self._add_proximal(p)
        buf = self.buffers.get(p)
        if buf is not None and self.host:
            buf = buf.to(p.device, non_blocking=True)
        bufs = [buf]
        sgd_update(
            [p],
            [p.grad],
            bufs,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        p.grad = None
        new = bufs[0]
        if new is None or new is self.buffers.get(p):
            return
        if not self.host or new.device == HOST:
            self.buffers[p] = new
            return
        # Both copies are queued on the current stream, so they stay ordered
        # with the update without a host synchronisation.
        if p not in self.buffers:
            self.buffers[p] = torch.empty(new.shape, dtype=new.dtype, pin_memory=True)
        self.buffers[p].copy_(new, non_blocking=True)

    def step(self) -> None:
        """Update after backward (no-op with fused updates, done in backward)."""
        if self.fused:
            return
        if self.per_param:
            for p in self.params:
                self._step_param(p)
            return
        for p in self.params:
            self._add_proximal(p)
        self.joint.step()
        self.joint.zero_grad(set_to_none=True)

    def to(self, device: torch.device) -> None:
        """Move device-resident optimiser state and the FedProx anchor."""
        for state in self.joint.state.values():
            if "momentum_buffer" in state:
                state["momentum_buffer"] = state["momentum_buffer"].to(device)
        if not self.host:
            self.buffers = {p: b.to(device) for p, b in self.buffers.items()}
        self.anchor = {p: a.to(device) for p, a in self.anchor.items()}

    def close(self) -> None:
        """Remove the backward hooks."""
        for h in self.handles:
            h.remove()


def _move(modules: nn.Module, device: torch.device) -> None:
    modules.to(device)


def backward_batch(
    fwd: nn.Module, x: torch.Tensor, y: torch.Tensor, micro_batch: int, device: torch.device
) -> float:
    """Accumulate the mean-loss gradient of ``(x, y)`` chunk by chunk; return the mean loss.

    Chunk ``c`` is moved to ``device`` on its own and its loss weighted by
    ``len(c) / len(y)``, so the accumulated gradient is the full batch's.
    """
    n = len(y)
    size = micro_batch if 0 < micro_batch < n else n
    total = torch.zeros((), device=device)
    for xc, yc in zip(x.split(size), y.split(size), strict=True):
        xc, yc = xc.to(device, non_blocking=True), yc.to(device, non_blocking=True)
        loss = F.cross_entropy(fwd(xc), yc)
        if len(yc) != n:
            loss = loss * (len(yc) / n)
        loss.backward()
        total += loss.detach()
    return total.item()  # one host synchronisation per batch, as in train_step


@torch.no_grad()
def prefix_outputs(
    model: StepModel, loader: Iterable[Batch], device: torch.device, micro_batch: int = 0
) -> list[Batch]:
    """The frozen prefix's outputs for every batch of ``loader``, kept on the host.

    On CUDA they go to pinned memory with asynchronous copies, so storing and
    later reloading them costs little more than the transfers.
    """
    pin = device.type == "cuda"
    out = []
    for x, y in loader:
        size = micro_batch if 0 < micro_batch < len(y) else len(y)
        feats: torch.Tensor | None = None
        for start, chunk in zip(range(0, len(y), size), x.split(size), strict=True):
            f = model.prefix(chunk.to(device, non_blocking=True))
            if feats is None:
                feats = torch.empty((len(y), *f.shape[1:]), dtype=f.dtype, pin_memory=pin)
            feats[start : start + len(f)].copy_(f, non_blocking=pin)
        out.append((feats, y))
    return out  # type: ignore[return-value]


def _epoch_batches(
    model: StepModel, loader: Iterable[Batch], plan: Plan, stepper: Stepper, device: torch.device
) -> Iterable[Batch]:
    """An epoch's batches; with an offloaded prefix, the frozen prefix's outputs, computed
    first with only the prefix on the device (the trainable part and its state on the host)."""
    if not plan.offload_prefix:
        return loader
    part, frozen = trainable_part(model), model.frozen_modules()
    _move(part, HOST)
    stepper.to(HOST)
    _move(frozen, device)
    batches = prefix_outputs(model, loader, device, plan.micro_batch)
    _move(frozen, HOST)
    _move(part, device)
    stepper.to(device)
    return batches


def train_with_plan(
    model: StepModel,
    loader: Iterable[Batch],
    plan: Plan,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    proximal_mu: float,
    device: torch.device,
) -> tuple[float, int]:
    """Train the step's trainable parameters under ``plan``; return mean loss and examples seen.

    Same contract as :func:`profl_strategy.task.train.train_step`. With an exact plan the
    weights equal plain training's up to rounding, except that trainable BatchNorm
    layers see micro-batch statistics (module docstring).

    Raises
    ------
    ValueError
        If the plan does not apply to the model's step.
    """
    if not plan.applies_to(model.step):
        raise ValueError(f"plan {plan.label()} does not apply to step {model.step}")
    model.train()
    if not plan.offload_prefix:
        model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    hyper = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    stepper = Stepper(params, plan, **hyper, proximal_mu=proximal_mu)
    bn_stats = FullBatchNormStats(model) if plan.micro_batch else None
    fwd = PlanForward(model, plan)
    total, seen = 0.0, 0
    try:
        for _ in range(epochs):
            batches = _epoch_batches(model, loader, plan, stepper, device)
            for x, y in batches:
                prox = stepper.proximal_term()
                loss = backward_batch(fwd, x, y, plan.micro_batch, device)
                if bn_stats is not None:
                    bn_stats.flush()
                stepper.step()
                total += (loss + prox) * len(y)
                seen += len(y)
    finally:
        stepper.close()
        if bn_stats is not None:
            bn_stats.close()
    return total / max(seen, 1), seen
