"""Make a training process's memory predictable, once, before its first training call.

Two things make a CPU process's resident size run far above the tensors it
holds, and :func:`prepare_process` removes both:

- **glibc's dynamic mmap threshold.** glibc serves a large block with ``mmap``
  and returns it on ``free``, until a block of that size is freed: then it
  raises the threshold (up to 32 MB) and later blocks of that size come from
  the heap, which does not shrink. Activations are such blocks, so a training
  step's freed activations stay resident and the next step's land beside
  them: ResNet-18 (width 1, batch 64, block 1) measured 374 MB for a 195 MB
  estimate. A fixed threshold (:data:`MMAP_THRESHOLD`) turns the dynamic
  behaviour off (``mallopt``, the same as ``MALLOC_MMAP_THRESHOLD_``):
  every tensor of 64 KiB or more is mapped and unmapped, and the resident
  size follows the tensors alive. tcmalloc and jemalloc are left as they are.
- **Code and runtime state paged in by the first step.** The first backward
  and optimiser step touch kernels, oneDNN and OpenMP state that nothing
  touched before: 5-7 MB of code for a CNN step, 60 MB for the warm-up below
  with the CUDA build of torch 2.14, and oneDNN's primitives. :func:`warm_up`
  trains the run's own model at a small width for one tiny batch per step, so
  this is part of the idle process, paid once at start, not by any call.

The resident size after both is the node's idle size
(:func:`~profl_strategy.memory.peak.idle_rss_mb`),
against which every call's peak is measured and from which ``memory-mb=auto``
is computed.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch

from profl_strategy.memory.peak import glibc, idle_rss_mb, trim_heap
from profl_strategy.task.model_key import ModelKey

MMAP_THRESHOLD = 64 * 1024
# What a CPU call keeps beyond the memory model's tensors, measured: oneDNN primitives
# (JIT code and scratchpads) for the call's shapes, which the small warm-up does not
# create, and glibc heap slack of the tensors under MMAP_THRESHOLD. The largest
# residual on benchmarks/results/cpu_memory (every cnn row, strict allocator) is 3.4 MB.
CPU_CALL_ALLOWANCE_MB = 3.5
_M_MMAP_THRESHOLD = -3
_prepared = False
_policy: bool | None = None


def fix_mmap_threshold() -> bool:
    """Give glibc a fixed mmap threshold (large blocks go back to the OS); False if not glibc."""
    libc = glibc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def warm_up(key: ModelKey) -> None:
    """Train every step of ``key``'s model, and the full model, for one tiny batch each.

    At a quarter of the width (at most) and two samples, so that the run's own
    kernels, its checkpointing and micro-batch paths are paged in for a few MB,
    and no call of the run pays a first touch.
    """
    from profl_strategy.memory.plans.plan import Plan
    from profl_strategy.memory.plans.train import train_with_plan
    from profl_strategy.methods.profl.schedule import progressive_steps
    from profl_strategy.methods.profl.step_model import StepModel, step_loss
    from profl_strategy.models import build_full_model
    from profl_strategy.task.train import train_step

    small = replace(key, width=min(key.width, 0.25))
    hyper: dict[str, Any] = {"epochs": 1, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
             "proximal_mu": 0.0, "device": torch.device("cpu")}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        batch = [(torch.randn(2, *key.input_shape), torch.randint(0, key.num_classes, (2,)))]
        train_step(build_full_model(small.spec()), batch, **hyper)
        steps = progressive_steps(small.spec().num_blocks)
        for step in steps:
            train_step(StepModel.of(small, step), batch, **hyper, loss_fn=step_loss(step))
        plan = Plan(micro_batch=1, checkpoint=True)
        train_with_plan(StepModel.of(small, steps[-1]), batch, plan, **hyper)
        train_with_plan(StepModel.of(small, steps[-1]), batch, Plan(fused_step=True), **hyper)


def prepared_idle_mb() -> float:
    """The idle size if this process is prepared (a train call ran here), else 0."""
    return idle_rss_mb() if _prepared else 0.0


def set_policy(strict: bool) -> bool:
    """Set the allocator policy, once per process (the first caller's): strict fixes glibc's
    mmap threshold (:func:`fix_mmap_threshold`). Returns whether the policy is strict.

    Once per process because it is the process's: where nodes share one (the in-process
    engine, tests), one strict node would otherwise slow every later step of all of them.
    """
    global _policy
    if _policy is None:
        _policy = strict and fix_mmap_threshold()
    return _policy


def prepare_process(key: ModelKey, strict: bool = True, held_mb: float = 0.0) -> float:
    """Set the allocator policy, warm the runtime for ``key``'s model and take the idle
    size, once per process (the first message's model; later ones are not warmed).

    Returns the idle resident size in MB, without ``held_mb`` (what the first call
    holds already: its received arrays). ``PROFL_WARM_UP=0`` skips the warm-up
    (its first-touch cost then lands in the first call's measured peak).
    """
    global _prepared
    if not _prepared:
        _prepared = True
        set_policy(strict)
        if os.environ.get("PROFL_WARM_UP", "1") != "0":
            warm_up(key)
        trim_heap()
    return idle_rss_mb(held_mb)
