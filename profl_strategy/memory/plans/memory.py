"""What a :class:`~profl_strategy.memory.plans.plan.Plan` costs, and which plan fits a budget.

:func:`estimate_plan` predicts each plan's peak with the memory model of
:mod:`profl_strategy.memory.model`: the plan's own training code traced on three
tiny probe batches, whose live bytes it extrapolates exactly (they are affine
in the batch size); micro-batch sizes share one set of probes. Plans that
move memory to the host are priced term by term (saved tensors counted by a
real forward pass, plus backward's temporaries). :func:`choose_plan` takes
the fastest plan that fits a budget. On CUDA the measured peak also holds
library workspaces the model does not see: cuBLAS's (64 MB by default on an
H100, :func:`profl_strategy.memory.model.cuda_workspace_mb`) and cuDNN's;
``python -m benchmarks.memory.plans`` measures them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache, partial

import torch
from torch import nn

from profl_strategy.engine.step import Step
from profl_strategy.memory.model import (
    BACKWARD_TEMPORARIES,
    MB,
    PROBE_BATCHES,
    PROBE_HYPER,
    Batches,
    MemoryEstimate,
    Trainer,
    estimate_call,
    largest_saved_bytes,
    message_bytes,
    saved_activation_bytes,
    trace_call,
)
from profl_strategy.memory.plans.forward import PlanForward
from profl_strategy.memory.plans.plan import Plan, candidate_plans
from profl_strategy.memory.plans.train import train_with_plan
from profl_strategy.methods.profl.step_model import StepModel, block_shapes, step_loss
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
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
    ``k``'s own saved tensors. Returns the maximum over ``k`` and per segment.
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
    peaks = _segment_peaks(size, owner, bounds, len(fwd.segments))
    return max(peaks), peaks


def _segment_peaks(
    size: dict[int, int], owner: dict[int, int], bounds: list[int], segments: int
) -> list[int]:
    """Bytes alive while each segment is recomputed (see :func:`recompute_peak_bytes`)."""
    pre = {p for p, o in owner.items() if o == -1}
    peaks = []
    for k in range(segments):
        alive = pre | set(bounds[: k + 1]) | {p for p, o in owner.items() if o == k}
        peaks.append(sum(size[p] for p in alive))
    return peaks


_PROBE_BATCHES = (2, 3, 4)
Terms = tuple[int, ...]


def plain_largest_saved_bytes(fwd: PlanForward, x: torch.Tensor, y: torch.Tensor) -> int:
    """:func:`~profl_strategy.memory.model.largest_saved_bytes` of ``fwd`` run plainly (not
    checkpointed): what backward's temporaries are sized by."""
    was = fwd.checkpointed
    fwd.checkpointed = False
    try:
        return largest_saved_bytes(fwd, x, y)
    finally:
        fwd.checkpointed = was


def _forward_terms(key: ModelKey, model: StepModel, shape: Plan, batch: int) -> tuple[int, ...]:
    """Byte counts of one forward of ``model`` run as ``shape`` at ``batch``.

    ``(saved, prefix_transient, input, largest, *recompute_peaks)``: what the
    forward saves for backward (:func:`~profl_strategy.memory.model.saved_activation_bytes`),
    the largest no-grad prefix transient, the input chunk, the largest saved
    activation (:func:`plain_largest_saved_bytes`), and with checkpointing the saved
    bytes alive while each segment is recomputed.
    """
    fwd = PlanForward(model, shape)
    shape_in = block_shapes(key.spec())[model.step.block] if shape.offload_prefix else None
    x = torch.randn(batch, *(shape_in or key.input_shape))
    y = torch.randint(0, key.num_classes, (batch,))
    saved, transient = saved_activation_bytes(fwd, x, y)
    largest = plain_largest_saved_bytes(fwd, x, y)
    peaks = recompute_peak_bytes(fwd, x, y)[1] if shape.checkpoint else []
    return (saved, transient, _nbytes([x]), largest, *peaks)


@lru_cache(maxsize=256)
def _probe(key: ModelKey, step: Step, shape: Plan) -> tuple[Terms, Terms] | None:
    """Terms at the first probe batch and their per-sample slope; None if not affine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel.of(key, step).train()
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
        model = StepModel.of(key, step).train()
        return _forward_terms(key, model, shape, batch_size)


@lru_cache(maxsize=256)
def parameter_terms(key: ModelKey, step: Step) -> tuple[int, int, int, int, int, int]:
    """Bytes of a step's weights: ``(resident, frozen prefix, trainable,
    largest one-node gradient set, largest trainable tensor, message)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel.of(key, step)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return (
        _state_bytes(model),
        _state_bytes(model.frozen_modules()),
        _nbytes(trainable),
        _largest_node_grad(model),
        max((_nbytes([p]) for p in trainable), default=0),
        message_bytes(model),
    )


def moves_to_host(plan: Plan) -> bool:
    """Whether ``plan`` keeps part of the call on the host (an offloaded prefix, host
    momentum): only a device beside a host gains from it."""
    return plan.offload_prefix or plan.optimizer == "sgd-momentum-host"


def _plan_trainer(plan: Plan) -> Trainer:
    """Trains a step model under ``plan``, its micro-batch set by the probe."""

    def train(model: nn.Module, batches: Batches, micro: int) -> None:
        shaped = replace(plan, micro_batch=micro)
        if shaped == Plan():
            step = model.step
            train_step(model, batches, **PROBE_HYPER, loss_fn=step_loss(step))  # type: ignore[arg-type]
        else:
            train_with_plan(model, batches, shaped, **PROBE_HYPER)  # type: ignore[arg-type]

    return train


@lru_cache(maxsize=256)
def _plan_traces(key: ModelKey, step: Step, shape: Plan) -> tuple[tuple[int, ...], ...]:
    """:func:`~profl_strategy.memory.model.trace_call` at every probe size for a plan's shape
    (``micro_batch`` 1: two micro-batches, 0: whole batches), shared by its micro-batch sizes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel.of(key, step).train()
    train, chunks = _plan_trainer(shape), 2 if shape.micro_batch else 1
    return tuple(
        tuple(trace_call(model, train, key.input_shape, key.num_classes, n, chunks))
        for n in PROBE_BATCHES
    )


@lru_cache(maxsize=1024)
def estimate_plan(key: ModelKey, step: Step, batch_size: int, plan: Plan) -> MemoryEstimate:
    """Peak memory of a train call of ``step`` with ``plan`` (cached; it runs the plan's own
    training code on tiny batches, :func:`profl_strategy.memory.model.estimate_call`).

    Plans that move memory to the host (:func:`moves_to_host`) are priced term by
    term instead (:func:`_host_plan_estimate`): a probe on the CPU cannot tell the
    device's bytes from the host's.

    Raises
    ------
    ValueError
        If the plan does not apply to the step (offloading without a frozen prefix).
    """
    if not plan.applies_to(step):
        raise ValueError(f"plan {plan.label()} does not apply to step {step}")
    if moves_to_host(plan):
        return _host_plan_estimate(key, step, batch_size, plan)
    micro = plan.micro_batch if 0 < plan.micro_batch < batch_size else 0
    shape = replace(plan, micro_batch=int(micro > 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = StepModel.of(key, step)
    # The largest activation an op takes: a saved one, or the frozen prefix's larger of
    # a layer's input and output (at least half of the prefix transient).
    _, prefix_transient, _, largest = forward_terms(key, step, Plan(), micro or batch_size)
    activation = max(largest, prefix_transient // 2)
    return estimate_call(
        model, _plan_trainer(shape), key.input_shape, key.num_classes, batch_size, activation,
        micro, traces=_plan_traces(key, step, shape),
    )  # fmt: skip


def _host_plan_estimate(key: ModelKey, step: Step, batch_size: int, plan: Plan) -> MemoryEstimate:
    """A host plan's peak as a sum of terms (the model of before the traced one; an upper
    bound of each kind at once).

    - activations, transients and the input are counted at the micro-batch
      size (gradients accumulate in place, so parameters, gradients and
      optimiser state do not change); backward's temporaries are
      ``BACKWARD_TEMPORARIES`` times the largest saved activation;
    - with checkpointing, activations are the larger of what the checkpointed
      forward saves and the largest recomputation phase
      (:func:`recompute_peak_bytes`), and the recomputed segment's output
      gradient is one more backward temporary;
    - with an offloaded prefix, the prefix's weights are not resident and the
      input is a chunk of stored prefix outputs; the peak is the larger of that
      training phase and the prefix pass (prefix weights, its transient and
      its input chunk), during which the trainable modules are off the device;
    - fused updates keep one node's gradients; host momentum keeps one
      parameter's buffer.
    """
    mb = plan.micro_batch if 0 < plan.micro_batch < batch_size else batch_size
    shape = Plan(checkpoint=plan.checkpoint, offload_prefix=plan.offload_prefix)
    saved, transient, inputs, largest_act, *peaks = forward_terms(key, step, shape, mb)
    activations = max([saved, *peaks])
    resident, frozen, train_bytes, node_grad, largest, message = parameter_terms(key, step)
    temporaries = BACKWARD_TEMPORARIES + int(plan.checkpoint)
    received = resident
    params = resident - frozen * plan.offload_prefix
    grads = node_grad if plan.fused_step else train_bytes
    optimizer = {"sgd-momentum": train_bytes, "sgd-momentum-host": largest, "sgd": 0}
    train = (
        grads + optimizer[plan.optimizer] + activations + transient + inputs
        + temporaries * largest_act + message - received
    )  # fmt: skip
    estimate = MemoryEstimate(params / MB, received / MB, (("train", train / MB),))
    if not plan.offload_prefix:
        return estimate
    prefix_pass = MemoryEstimate(
        frozen / MB, received / MB, (("prefix", (transient + inputs) / MB),)
    )
    return max(estimate, prefix_pass, key=lambda e: e.total_mb)


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
