"""Peak training memory of a ProFL step, estimated from a real forward pass.

The estimate is the sum of what stays allocated through one optimiser step:

- every parameter and buffer resident on the device (frozen prefix included);
- gradients and optimiser state of the parameters that train;
- tensors autograd saves for backward, counted exactly with
  :func:`torch.autograd.graph.saved_tensors_hooks` (deduplicated by storage,
  parameters excluded);
- the largest transient of the no-grad frozen prefix (a layer's input plus its
  output, which are alive together) and the input batch.

- the message: the received arrays, which the message holds through the call,
  and the reply's copy of what was trained (:func:`message_bytes`); host
  memory, which on a CPU or a unified-memory board is the device's;
- backward's gradient temporaries: while a node's backward runs, the gradient
  of its output and of its input are alive together, two activation-sized
  tensors the saved-tensor count does not see; :data:`BACKWARD_TEMPORARIES`
  times the largest saved activation (:func:`largest_saved_bytes`) bounds them.

It leaves out allocator slack and cuDNN workspaces: on the CPU a node fixes
glibc's mmap threshold so that freed activations go back to the system
(:mod:`profl_strategy.runtime`), and measured peaks stay under this model. On
CUDA, PyTorch also allocates a cuBLAS workspace per (thread, stream) from the
same caching allocator; :func:`cuda_workspace_mb` gives that term, which a
CUDA prediction adds once (see ``benchmarks/memory_model_check.py``).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from profl_strategy.models import build_full_model
from profl_strategy.step_model import Step, StepModel, step_loss
from profl_strategy.task.model_key import ModelKey

MB = 2**20
BACKWARD_TEMPORARIES = 2  # activation-sized gradients alive in backward (output's and input's)
# Threads that run cuBLAS in one training step: the caller (forward) and
# autograd's per-device worker thread (backward), each with its own handle.
CUBLAS_THREADS = 2


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak-memory terms of one training configuration, in MB."""

    params_mb: float
    grads_mb: float
    optimizer_mb: float
    activations_mb: float
    transient_mb: float
    message_mb: float = 0.0

    @property
    def total_mb(self) -> float:
        """Sum of all terms: the estimated peak."""
        return (
            self.params_mb
            + self.grads_mb
            + self.optimizer_mb
            + self.activations_mb
            + self.transient_mb
            + self.message_mb
        )

    def as_dict(self) -> dict[str, float]:
        """Terms and total, rounded for logs and JSON."""
        d = {k: round(v, 3) for k, v in asdict(self).items()}
        d["total_mb"] = round(self.total_mb, 3)
        return d


def _nbytes(tensors: list[torch.Tensor]) -> int:
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
    (its trainable parameters and every buffer: an upper bound of the trainable keys)."""
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


def estimate_training(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    num_classes: int,
    optimizer_slots: int = 1,
    loss_fn: Any = F.cross_entropy,
) -> MemoryEstimate:
    """Estimate the peak of one training step of ``model`` at ``batch_size``.

    ``optimizer_slots`` is the number of parameter-sized tensors the optimiser
    keeps per trainable parameter (1 for SGD with momentum, 2 for Adam);
    ``loss_fn(output, labels)`` is the loss the step trains with.
    """
    model.train()
    x = torch.randn(batch_size, *input_shape)
    y = torch.randint(0, num_classes, (batch_size,))
    saved, transient = saved_activation_bytes(model, x, y, loss_fn)
    temporaries = BACKWARD_TEMPORARIES * largest_saved_bytes(model, x, y, loss_fn)
    resident = _nbytes(list(model.parameters())) + _nbytes(list(model.buffers()))
    trainable = _nbytes([p for p in model.parameters() if p.requires_grad])
    return MemoryEstimate(
        params_mb=resident / MB,
        grads_mb=trainable / MB,
        optimizer_mb=optimizer_slots * trainable / MB,
        activations_mb=saved / MB,
        transient_mb=(transient + _nbytes([x]) + temporaries) / MB,
        message_mb=message_bytes(model) / MB,
    )


@lru_cache(maxsize=256)
def estimate_step(
    key: ModelKey, step: Step, batch_size: int, optimizer_slots: int = 1
) -> MemoryEstimate:
    """Peak memory of training ``step`` (cached: it runs a real forward)."""
    with torch.random.fork_rng():  # estimating must not move the caller's RNG stream
        torch.manual_seed(0)
        model = StepModel.of(key, step)
        return estimate_training(
            model, key.input_shape, batch_size, key.num_classes, optimizer_slots, step_loss(step)
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
def estimate_full(key: ModelKey, batch_size: int, optimizer_slots: int = 1) -> MemoryEstimate:
    """Peak memory of ordinary full-model training, the reference for budgets."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_full_model(key.spec())
        return estimate_training(
            model, key.input_shape, batch_size, key.num_classes, optimizer_slots
        )


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
        return MemoryEstimate(resident / MB, 0.0, 0.0, 0.0, (transient + _nbytes([x])) / MB)


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
