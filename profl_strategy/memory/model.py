"""Peak memory of a training call, from the training code itself run on tiny batches.

A call holds, for its whole length, the model's weights and buffers. On top
comes the largest of three phases that do not overlap:

- **load**: the received arrays, popped from the message one by one as they
  become tensors and are copied into the model (the message's copy of the
  state and the tensors' together are one state, plus the array being
  converted); after it the call holds no second copy of the state;
- **train**: the input batch plus every tensor the training loop allocates
  (activations saved for backward, backward's temporaries, gradients, the
  optimiser's state and its update temporaries), traced after every op
  (:mod:`profl_strategy.memory.trace`) at three probe batch sizes and
  extrapolated exactly to the real one;
- **reply**: what outlives training (gradients) plus the reply's arrays and the
  serialising copy of the largest one.

A sum of per-kind maxima (all activations + all gradients + ...) over-counted
CPU peaks by up to 70%, because the kinds peak at different moments. What the
trace cannot see: allocator slack and library workspaces. On the CPU a node
fixes glibc's mmap threshold (:mod:`profl_strategy.memory.runtime`) and a small
runtime allowance covers oneDNN; on CUDA, :func:`cuda_workspace_mb` gives the
cuBLAS workspace a prediction adds once (``benchmarks/memory/model_check.py``).
:func:`saved_activation_bytes` and :func:`largest_saved_bytes` remain for the
plans that move memory to the host, which are priced term by term
(:mod:`profl_strategy.memory.plans.memory`).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from profl_strategy.engine.step import Step
from profl_strategy.memory.trace import extrapolated_peak, live_trace
from profl_strategy.methods.profl.step_model import StepModel, step_loss
from profl_strategy.models import build_full_model
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step

MB = 2**20
BACKWARD_TEMPORARIES = 2  # activation-sized gradients alive in backward (output's and input's)
# Buffers a library op holds inside itself, where no tensor shows them: oneDNN reorders a
# convolution's operands (input, output gradient, weight, weight gradient) to its blocked
# layout within the op. Two buffers the size of the largest operand bound them (measured
# on the CPU: ResNet-18 width 1, batch 64, stage-2 block 1 peaked 25 MB, 1.5 activations,
# over its traced tensors; VGG16 stage-1 block 4, whose activations are tiny, 8.5 MB, about
# one 512x512x3x3 weight).
LIBRARY_SCRATCH = 2
# Threads that run cuBLAS in one training step: the caller (forward) and
# autograd's per-device worker thread (backward), each with its own handle.
CUBLAS_THREADS = 2


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training call, in MB: what it holds throughout, plus its largest
    phase (the phases do not overlap)."""

    resident_mb: float  # the model's weights and buffers on the device
    message_mb: float  # received arrays held through the whole call (0: freed as loaded)
    phases: tuple[tuple[str, float], ...]  # (name, MB) of each phase, e.g. load, train, reply

    @property
    def total_mb(self) -> float:
        """The estimated peak: resident + message + the largest phase."""
        return self.resident_mb + self.message_mb + max((mb for _, mb in self.phases), default=0)

    def phase_mb(self, name: str) -> float:
        """One phase's MB (0 if the call has no such phase)."""
        return dict(self.phases).get(name, 0.0)

    def as_dict(self) -> dict[str, float]:
        """Terms and total, rounded for logs and JSON."""
        d = {"resident_mb": round(self.resident_mb, 3), "message_mb": round(self.message_mb, 3)}
        d |= {f"{name}_mb": round(mb, 3) for name, mb in self.phases}
        d["total_mb"] = round(self.total_mb, 3)
        return d


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any = F.cross_entropy
) -> tuple[int, int]:
    """Bytes saved for backward by ``loss_fn(model(x), y)``, and the prefix transient.

    Returns ``(saved, transient)`` where ``transient`` is the largest
    input-plus-output of a leaf module that ran without autograd recording
    (the frozen prefix).
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_ptrs |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    transient = 0

    def on_forward(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal transient
        if torch.is_grad_enabled() or not isinstance(out, torch.Tensor):
            return
        ins = [a for a in args if isinstance(a, torch.Tensor)]
        transient = max(transient, _nbytes(ins) + _nbytes([out]))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(on_forward) for m in leaves]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_fn(model(x), y)
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values()), transient


def message_bytes(model: nn.Module) -> int:
    """Bytes of the arrays a train call receives (the sub-model's whole state) and returns
    (its trainable parameters and every buffer: at least the trainable keys)."""
    received = _nbytes(list(model.parameters())) + _nbytes(list(model.buffers()))
    trainable = _nbytes([p for p in model.parameters() if p.requires_grad])
    return received + trainable + _nbytes(list(model.buffers()))


def largest_saved_bytes(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any = F.cross_entropy
) -> int:
    """Bytes of the largest tensor ``loss_fn(model(x), y)`` saves for backward (not a weight).

    Backward holds the gradient of a node's output while it makes the gradient
    of its input; the largest saved activation bounds each of them.
    """
    ptrs = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    largest = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        storage = t.untyped_storage()
        if storage.data_ptr() not in ptrs:
            largest = max(largest, storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(model(x), y)
    return largest


# Probe batch sizes of a traced estimate (:func:`estimate_call`), and what a probe trains
# with: conf/config.yaml's defaults. Momentum keeps a buffer and weight decay makes
# SGD copy the gradients, so a run without either needs less than estimated.
PROBE_BATCHES = (2, 3, 4)
PROBE_HYPER: dict[str, Any] = {"epochs": 1, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                               "proximal_mu": 0.0, "device": torch.device("cpu")}  # fmt: skip
Batches = list[tuple[torch.Tensor, torch.Tensor]]
# Trains a model on the batches; the int is the micro-batch size (0: whole batches).
Trainer = Callable[[nn.Module, Batches, int], object]


def trace_call(
    model: nn.Module,
    train: Trainer,
    input_shape: tuple[int, ...],
    num_classes: int,
    n: int,
    chunks: int = 1,
) -> list[int]:
    """Live bytes after every op of ``train`` on two batches of ``chunks * n`` random samples
    (``n``-sample micro-batches when ``chunks > 1``); weights and inputs are not counted.
    The second step holds the optimiser's state, as every later one does."""
    with torch.random.fork_rng(devices=[]):  # estimating must not move the caller's RNG
        torch.manual_seed(0)
        batches = [(torch.randn(chunks * n, *input_shape),
                    torch.randint(0, num_classes, (chunks * n,))) for _ in range(2)]  # fmt: skip
        held = [*model.parameters(), *model.buffers(), *(t for batch in batches for t in batch)]
        return live_trace(lambda: train(model, batches, n if chunks > 1 else 0), held)


def estimate_call(
    model: nn.Module,
    train: Trainer,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    largest_activation: int,
    micro_batch: int = 0,
    traces: Sequence[Sequence[int]] | None = None,
) -> MemoryEstimate:
    """Peak of a train call that runs ``train`` on ``model`` (a copy is trained).

    ``traces`` are :func:`trace_call`'s at :data:`PROBE_BATCHES` (with two
    chunks when ``micro_batch`` splits the batch), traced here when not given;
    they are extrapolated to the micro-batch (or batch) size. The train phase
    adds the whole batch's input and :data:`LIBRARY_SCRATCH` times the larger of
    ``largest_activation`` (bytes of the largest activation an op takes, at the
    micro-batch size) and the largest convolution weight (oneDNN reorders those;
    linear layers run on BLAS without).
    """
    size = micro_batch if 0 < micro_batch < batch_size else batch_size
    chunks = 2 if size < batch_size else 1
    trainee = cache(lambda: copy.deepcopy(model).train())  # copied only if traced here

    def trace_at(n: int) -> list[int]:
        return trace_call(trainee(), train, input_shape, num_classes, n, chunks)

    if traces is None:
        traces = [trace_at(n) for n in PROBE_BATCHES]
    got = extrapolated_peak(traces, PROBE_BATCHES, size)
    if got is None:
        trace = trace_at(size)
        got = (max(trace), trace[-1])
    peak, after = got
    convolutions = (_nbytes([p]) for p in model.parameters() if p.dim() == 4)
    operand = max([largest_activation, *convolutions])
    state = [*model.parameters(), *model.buffers()]
    held = _nbytes(state)
    trainable = [p for p in model.parameters() if p.requires_grad]
    largest = max((_nbytes([p]) for p in trainable), default=0)
    # Loading pops each received array as it becomes a tensor: the message's bytes and
    # the tensors add up to one state, plus the array being converted.
    load = held + max((_nbytes([t]) for t in state), default=0)
    # The reply's arrays (trainable weights and every buffer), and np.save's buffer and
    # its copy of the largest one while it is serialised.
    reply = _nbytes(trainable) + _nbytes(list(model.buffers())) + 2 * largest
    inputs = batch_size * (4 * math.prod(input_shape) + 8)  # float32 images, int64 labels
    return MemoryEstimate(
        resident_mb=held / MB,
        message_mb=0.0,
        phases=(
            ("load", load / MB),
            ("train", (inputs + peak + LIBRARY_SCRATCH * operand) / MB),
            ("reply", (after + reply) / MB),
        ),
    )


def estimate_training(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    num_classes: int,
    loss_fn: Any = F.cross_entropy,
) -> MemoryEstimate:
    """Peak of a train call that trains ``model`` plainly (:func:`~profl_strategy.task.
    train.train_step`) with ``loss_fn(output, labels)`` at ``batch_size``."""

    def train(m: nn.Module, batches: Batches, _micro: int) -> None:
        train_step(m, batches, **PROBE_HYPER, loss_fn=loss_fn)

    largest = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for n in PROBE_BATCHES[:2]:
            x = torch.randn(n, *input_shape)
            y = torch.randint(0, num_classes, (n,))
            # A saved activation, or the frozen prefix's larger of a layer's input and output.
            prefix = saved_activation_bytes(model, x, y, loss_fn)[1] // 2
            largest.append(max(largest_saved_bytes(model, x, y, loss_fn), prefix))
    n0 = PROBE_BATCHES[0]
    activation = largest[0] + (largest[1] - largest[0]) * (batch_size - n0)
    return estimate_call(model, train, input_shape, num_classes, batch_size, activation)


@lru_cache(maxsize=256)
def estimate_step(key: ModelKey, step: Step, batch_size: int) -> MemoryEstimate:
    """Peak memory of training ``step`` plainly (cached: it runs the training code)."""
    with torch.random.fork_rng():  # estimating must not move the caller's RNG stream
        torch.manual_seed(0)
        model = StepModel.of(key, step)
        return estimate_training(
            model, key.input_shape, batch_size, key.num_classes, step_loss(step)
        )


@lru_cache(maxsize=64)
def block_parameter_counts(key: ModelKey) -> tuple[int, ...]:
    """Parameters of each block (the last one with the model's head)."""
    with torch.random.fork_rng():
        spec = key.spec()
        counts = [sum(p.numel() for p in spec.make_block(t).parameters())
                  for t in range(spec.num_blocks)]  # fmt: skip
        counts[-1] += sum(p.numel() for p in spec.make_head().parameters())
        return tuple(counts)


@lru_cache(maxsize=64)
def estimate_full(key: ModelKey, batch_size: int) -> MemoryEstimate:
    """Peak memory of ordinary full-model training, the reference for budgets."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_full_model(key.spec())
        return estimate_training(model, key.input_shape, batch_size, key.num_classes)


@lru_cache(maxsize=16)
def estimate_forward(key: ModelKey, batch_size: int) -> MemoryEstimate:
    """Peak of a forward pass of the full model without autograd.

    What a node needs to report BN statistics of the global model (static BN):
    resident weights and buffers plus the largest input-plus-output of a layer.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_full_model(key.spec()).train()
        x = torch.randn(batch_size, *key.input_shape)
        y = torch.randint(0, key.num_classes, (batch_size,))
        with torch.no_grad():
            _, transient = saved_activation_bytes(model, x, y)
        resident = _nbytes(list(model.parameters())) + _nbytes(list(model.buffers()))
        return MemoryEstimate(resident / MB, 0.0, (("forward", (transient + _nbytes([x])) / MB),))


def cuda_workspace_mb(capability: tuple[int, int], config: str | None = None) -> float:
    """cuBLAS workspace PyTorch allocates for one training step on a CUDA device.

    Mirrors ``at::cuda::getChosenWorkspaceSize``: ``CUBLAS_WORKSPACE_CONFIG``
    (``:SIZE_KiB:COUNT`` pairs) when set, else 32 MiB on compute capability 9.x
    and 8.125 MiB before it; one workspace per cuBLAS thread
    (:data:`CUBLAS_THREADS`). The recorded H100 runs differ by 64.6 MB between
    the default and ``:16:8`` (benchmarks/results/plans_cuda_h100_*.md).

    Parameters
    ----------
    capability : tuple[int, int]
        ``torch.cuda.get_device_capability()`` of the training device.
    config : str or None
        ``CUBLAS_WORKSPACE_CONFIG``; None reads the environment.
    """
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG") if config is None else config
    pairs = re.findall(r":([0-9]+):([0-9]+)", config or "")
    if pairs:
        per_thread = sum(int(size) * 1024 * int(count) for size, count in pairs)
    elif capability[0] == 9:
        per_thread = 4096 * 1024 * 8
    else:
        per_thread = 4096 * 1024 * 2 + 16 * 1024 * 8
    return CUBLAS_THREADS * per_thread / MB
