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
  :mod:`client_app.plan_train`). Frozen prefixes run in eval mode and are
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

:func:`estimate_plan` predicts each plan's peak with the memory model of
:mod:`profl_strategy.memory` (saved tensors counted by a real forward pass)
plus backward's gradient temporaries, from three tiny probe batches whose byte
counts it extrapolates exactly (they are affine in the batch size), so a
client can price every candidate in milliseconds. :func:`choose_plan` takes
the fastest plan that fits a budget. On CUDA the measured peak also holds
library workspaces the model does not see: cuBLAS's is about 65 MB by default
on an H100 (``CUBLAS_WORKSPACE_CONFIG=:16:8`` shrinks it to 128 KB), plus
cuDNN's; ``python -m benchmarks.plans`` measures both.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache, partial

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from profl_strategy.memory import MB, MemoryEstimate, ModelKey, saved_activation_bytes
from profl_strategy.step_model import STAGE_GROW, Step, StepModel, block_shapes

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
# are priors; only their order matters, and ``python -m benchmarks.plans
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


def choose_plan(
    key: ModelKey,
    step: Step,
    batch_size: int,
    budget_mb: float,
    candidates: list[Plan] | None = None,
) -> Plan | None:
    """The first (fastest) applicable candidate whose estimated peak fits the budget.

    ``candidates`` defaults to :func:`candidate_plans` with exact plans only.
    Returns None when no candidate fits: the node cannot train this step.
    """
    for plan in candidates if candidates is not None else candidate_plans(batch_size):
        if not plan.applies_to(step):
            continue
        if estimate_plan(key, step, batch_size, plan).total_mb <= budget_mb:
            return plan
    return None


def cheapest_plan(
    key: ModelKey, step: Step, batch_size: int, candidates: list[Plan] | None = None
) -> tuple[Plan, MemoryEstimate]:
    """The applicable candidate with the lowest estimated peak (ties: the faster one)."""
    pool = candidates if candidates is not None else candidate_plans(batch_size)
    best = min(
        (p for p in pool if p.applies_to(step)),
        key=lambda p: estimate_plan(key, step, batch_size, p).total_mb,
    )
    return best, estimate_plan(key, step, batch_size, best)


# ---------------------------------------------------------------------------
# Running a step model the way a plan does


_LOCAL = threading.local()


def in_recompute() -> bool:
    """True while checkpointing recomputes a segment during backward."""
    return getattr(_LOCAL, "recompute_depth", 0) > 0


@contextmanager
def _recomputing(segment: nn.Module) -> Iterator[None]:
    """Context of a segment's recomputation: no second BatchNorm statistics update.

    The recomputation must run exactly the ops of the original forward (the
    checkpoint matches saved tensors by position), so BatchNorm layers update
    their running statistics again; their buffers are restored afterwards.
    """
    bns = [m for m in segment.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    before = [[b.clone() for b in bn.buffers()] for bn in bns]
    _LOCAL.recompute_depth = getattr(_LOCAL, "recompute_depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.recompute_depth -= 1
        with torch.no_grad():
            for bn, saved in zip(bns, before, strict=True):
                for b, s in zip(bn.buffers(), saved, strict=True):
                    b.copy_(s)


def _checkpoint_contexts(
    segment: nn.Module,
) -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    return nullcontext(), _recomputing(segment)


def _starts_segment(child: nn.Module) -> bool:
    weighted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention)
    return any(isinstance(m, weighted) for m in child.modules())


def block_segments(block: nn.Module) -> list[nn.Module]:
    """Checkpoint segments of a block: its children, grouped behind each weighted layer.

    Only an :class:`torch.nn.Sequential` block can be cut (its forward is its
    children in order); any other block is a single segment. A new segment
    starts at each child that holds a convolution, linear layer or attention,
    so a BatchNorm and an in-place ReLU stay with the convolution before them:
    an in-place op must never modify a checkpointed segment's saved input.
    """
    if not isinstance(block, nn.Sequential) or len(block) < 2:
        return [block]
    groups: list[list[nn.Module]] = []
    for child in block:
        if not groups or _starts_segment(child):
            groups.append([child])
        else:
            groups[-1].append(child)
    return [g[0] if len(g) == 1 else nn.Sequential(*g) for g in groups]


def trainable_part(model: StepModel) -> nn.ModuleList:
    """Every module of ``model`` outside the frozen prefix (block, front, output, head)."""
    frozen = set(model.frozen_modules())
    parts = [b for b in model.blocks.values() if b not in frozen]
    parts += [*model.front.values(), *model.out.values()]
    if model.head is not None:
        parts.append(model.head)
    return nn.ModuleList(parts)


class PlanForward(nn.Module):
    """``model``'s forward as ``plan`` runs it.

    With ``offload_prefix`` the input is the frozen prefix's output (the active
    block's input), not the image. With ``checkpoint`` the active block runs as
    checkpointed segments; ``checkpointed=False`` runs the same segments plainly
    (used to measure what each segment saves).
    """

    def __init__(self, model: StepModel, plan: Plan, checkpointed: bool = True) -> None:
        super().__init__()
        self.model = model
        self.skip_prefix = plan.offload_prefix
        block = model.blocks[str(model.step.block)]
        self.segments = block_segments(block) if plan.checkpoint else [block]
        self.checkpointed = plan.checkpoint and checkpointed

    def run_block(self, x: torch.Tensor) -> torch.Tensor:
        """The active block, segment by segment."""
        for seg in self.segments:
            if self.checkpointed:
                ctx: Callable = partial(_checkpoint_contexts, seg)
                x = checkpoint(seg, x, use_reentrant=False, context_fn=ctx)
            else:
                x = seg(x)
        return x

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """Output module (or the head, for the last block)."""
        m = self.model
        return m.head(x) if m.head is not None else m.out[str(m.step.block)](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip_prefix:
            x = self.model.prefix(x)
        return self.output(self.run_block(x))


# ---------------------------------------------------------------------------
# Memory estimates


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _state_bytes(module: nn.Module) -> int:
    return _nbytes(list(module.parameters())) + _nbytes(list(module.buffers()))


def _largest_node_grad(model: nn.Module) -> int:
    """Bytes of the largest set of gradients one backward node makes at once.

    With fused updates a gradient lives from its node's backward to its own
    update; one layer's weight and bias come out of the same node.
    """
    per_leaf = [
        _nbytes([p for p in m.parameters(recurse=False) if p.requires_grad])
        for m in model.modules()
    ]
    return max(per_leaf, default=0)


def recompute_peak_bytes(
    fwd: PlanForward, x: torch.Tensor, y: torch.Tensor
) -> tuple[int, list[int]]:
    """Saved bytes alive while backward recomputes each checkpointed segment.

    Runs ``fwd``'s segments plainly under a pack hook that attributes every
    saved storage to the segment (or the part before/after the block) that
    saved it. While segment ``k`` is recomputed, what the output module and
    later segments saved is gone, and what is alive is: everything saved
    before the block, the checkpointed inputs of segments ``0..k`` and segment
    ``k``'s own saved tensors. Returns the maximum over ``k`` and the per-segment
    values.
    """
    ptrs = {t.untyped_storage().data_ptr() for t in [*fwd.parameters(), *fwd.buffers()]}
    size: dict[int, int] = {}
    owner: dict[int, int] = {}
    bounds: list[int] = []
    phase = -1  # -1: before the block; k: segment k; len(segments): after it

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in ptrs:
            size[ptr] = max(size.get(ptr, 0), storage.nbytes())
            owner.setdefault(ptr, phase)
        return t

    def enter(k: int, _m: nn.Module, args: tuple) -> None:
        nonlocal phase
        phase = k
        storage = args[0].untyped_storage()
        size[storage.data_ptr()] = max(size.get(storage.data_ptr(), 0), storage.nbytes())
        bounds.append(storage.data_ptr())

    def leave(_m: nn.Module, _args: tuple, _out: torch.Tensor) -> None:
        nonlocal phase
        phase = len(fwd.segments)

    was = fwd.checkpointed
    fwd.checkpointed = False
    handles = [s.register_forward_pre_hook(partial(enter, k)) for k, s in enumerate(fwd.segments)]
    handles.append(fwd.segments[-1].register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            torch.nn.functional.cross_entropy(fwd(x), y)
    finally:
        fwd.checkpointed = was
        for h in handles:
            h.remove()
    pre = {p for p, o in owner.items() if o == -1}
    peaks = []
    for k in range(len(fwd.segments)):
        alive = pre | set(bounds[: k + 1]) | {p for p, o in owner.items() if o == k}
        peaks.append(sum(size[p] for p in alive))
    return max(peaks), peaks


_PROBE_BATCHES = (2, 3, 4)
BACKWARD_TEMPORARIES = 2  # activation-sized gradients alive in backward (output's and input's)
Terms = tuple[int, ...]


def largest_saved_bytes(fwd: PlanForward, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the largest tensor the (plain, not checkpointed) forward saves for backward.

    Backward holds the gradient of a node's output while it makes the gradient
    of its input, two activation-sized temporaries that the saved-tensor count
    does not see; the largest saved activation bounds each of them.
    """
    ptrs = {t.untyped_storage().data_ptr() for t in [*fwd.parameters(), *fwd.buffers()]}
    largest = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        storage = t.untyped_storage()
        if storage.data_ptr() not in ptrs:
            largest = max(largest, storage.nbytes())
        return t

    was = fwd.checkpointed
    fwd.checkpointed = False
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            torch.nn.functional.cross_entropy(fwd(x), y)
    finally:
        fwd.checkpointed = was
    return largest


def _forward_terms(key: ModelKey, model: StepModel, shape: Plan, batch: int) -> tuple[int, ...]:
    """Byte counts of one forward of ``model`` run as ``shape`` at ``batch``.

    ``(saved, prefix_transient, input, largest, *recompute_peaks)``: what the
    forward saves for backward (:func:`~profl_strategy.memory.saved_activation_bytes`),
    the largest no-grad prefix transient, the input chunk, the largest saved
    activation (:func:`largest_saved_bytes`), and with checkpointing the saved
    bytes alive while each segment is recomputed.
    """
    fwd = PlanForward(model, shape)
    shape_in = block_shapes(key.spec())[model.step.block] if shape.offload_prefix else None
    x = torch.randn(batch, *(shape_in or key.input_shape))
    y = torch.randint(0, key.num_classes, (batch,))
    saved, transient = saved_activation_bytes(fwd, x, y)
    largest = largest_saved_bytes(fwd, x, y)
    peaks = recompute_peak_bytes(fwd, x, y)[1] if shape.checkpoint else []
    return (saved, transient, _nbytes([x]), largest, *peaks)


@lru_cache(maxsize=256)
def _probe(key: ModelKey, step: Step, shape: Plan) -> tuple[Terms, Terms] | None:
    """Terms at the first probe batch and their per-sample slope; None if not affine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel(key.spec(), step, key.out_depth).train()
        try:
            a, b, c = (_forward_terms(key, model, shape, n) for n in _PROBE_BATCHES)
        except (ValueError, RuntimeError):  # e.g. BatchNorm on one value per channel
            return None
    slope = tuple(v1 - v0 for v0, v1 in zip(a, b, strict=True))
    if any(v2 - v1 != d for v1, v2, d in zip(b, c, slope, strict=True)):
        return None
    return a, slope


@lru_cache(maxsize=512)
def forward_terms(key: ModelKey, step: Step, shape: Plan, batch_size: int) -> tuple[int, ...]:
    """:func:`_forward_terms` at ``batch_size``, from three tiny probe batches.

    Every term is an affine function of the batch size (each saved tensor is
    per-sample or per-channel, and which tensors are saved does not depend on
    the batch), so probes at 2, 3 and 4 samples give it exactly, for every
    batch and micro-batch size at once; when the probes are not collinear (or
    a probe fails), the terms are measured at ``batch_size`` itself. Only
    ``shape.checkpoint`` and ``shape.offload_prefix`` matter.
    """
    probe = _probe(key, step, shape)
    if probe is not None:
        a, slope = probe
        n = batch_size - _PROBE_BATCHES[0]
        return tuple(v + d * n for v, d in zip(a, slope, strict=True))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel(key.spec(), step, key.out_depth).train()
        return _forward_terms(key, model, shape, batch_size)


@lru_cache(maxsize=256)
def parameter_terms(key: ModelKey, step: Step) -> tuple[int, int, int, int, int]:
    """Bytes of a step's weights: ``(resident, frozen prefix, trainable,
    largest one-node gradient set, largest trainable tensor)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel(key.spec(), step, key.out_depth)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return (
        _state_bytes(model),
        _state_bytes(model.frozen_modules()),
        _nbytes(trainable),
        _largest_node_grad(model),
        max((_nbytes([p]) for p in trainable), default=0),
    )


@lru_cache(maxsize=1024)
def estimate_plan(key: ModelKey, step: Step, batch_size: int, plan: Plan) -> MemoryEstimate:
    """Peak memory of training ``step`` with ``plan`` (cached; it runs small real forwards).

    The terms follow :func:`profl_strategy.memory.estimate_training`, plus
    backward's gradient temporaries, which that model leaves out and which
    CUDA measurements show (e.g. +34 MB for ResNet-18's stem at batch 64):
    ``BACKWARD_TEMPORARIES`` times the largest saved activation, in
    ``transient_mb``. So the no-change plan is
    :func:`profl_strategy.memory.estimate_step` plus that term. Then:

    - activations, transients and the input are counted at the micro-batch
      size (gradients accumulate in place, so parameters, gradients and
      optimiser state do not change);
    - with checkpointing, activations are the larger of what the checkpointed
      forward saves (counted under ``saved_tensors_hooks``) and the largest
      recomputation phase (:func:`recompute_peak_bytes`);
    - with an offloaded prefix, the prefix's weights are not resident and the
      input is a chunk of stored prefix outputs; the peak is the larger of that
      training phase and the prefix pass (prefix weights, its transient and
      its input chunk), during which the trainable modules are off the device;
    - fused updates keep one node's gradients; host momentum keeps one
      parameter's buffer; ``"sgd"`` keeps none.

    Raises
    ------
    ValueError
        If the plan does not apply to the step (offloading without a frozen prefix).
    """
    if not plan.applies_to(step):
        raise ValueError(f"plan {plan.label()} does not apply to step {step}")
    mb = plan.micro_batch if 0 < plan.micro_batch < batch_size else batch_size
    shape = Plan(checkpoint=plan.checkpoint, offload_prefix=plan.offload_prefix)
    saved, transient, inputs, largest_act, *peaks = forward_terms(key, step, shape, mb)
    activations = max([saved, *peaks])
    resident, frozen, train_bytes, node_grad, largest = parameter_terms(key, step)
    params = resident - frozen * plan.offload_prefix
    grads = node_grad if plan.fused_step else train_bytes
    optimizer = {"sgd-momentum": train_bytes, "sgd-momentum-host": largest, "sgd": 0}
    train = MemoryEstimate(
        params_mb=params / MB,
        grads_mb=grads / MB,
        optimizer_mb=optimizer[plan.optimizer] / MB,
        activations_mb=activations / MB,
        transient_mb=(transient + inputs + BACKWARD_TEMPORARIES * largest_act) / MB,
    )
    if not plan.offload_prefix:
        return train
    _, prefix_transient, image_bytes, _ = forward_terms(key, step, Plan(), mb)
    prefix_pass = MemoryEstimate(
        params_mb=frozen / MB,
        grads_mb=0.0,
        optimizer_mb=0.0,
        activations_mb=0.0,
        transient_mb=(prefix_transient + image_bytes) / MB,
    )
    return max(train, prefix_pass, key=lambda e: e.total_mb)
