"""The memory model: exact saved-tensor counts, monotone in batch, below full training."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from profl_strategy.engine.step import Step
from profl_strategy.memory.model import (
    LIBRARY_SCRATCH,
    MB,
    cuda_workspace_mb,
    estimate_full,
    estimate_step,
    estimate_training,
    saved_activation_bytes,
    trace_call,
)
from profl_strategy.memory.plans.memory import _plan_trainer, estimate_plan, forward_terms
from profl_strategy.memory.plans.plan import Plan
from profl_strategy.methods.profl.schedule import progressive_steps
from profl_strategy.methods.profl.step_model import StepModel
from profl_strategy.task.model_key import ModelKey

CNN = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1)
RESNET = ModelKey("resnet18", 10, (3, 32, 32), 0.25, 1)


def test_saved_tensors_match_a_hand_count() -> None:
    # Linear saves its input; ReLU saves its output; Linear saves its input (the
    # same storage as ReLU's output); cross-entropy saves its log-softmax output
    # and the int64 targets (plus a scalar).
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    x, y = torch.randn(8, 10), torch.randint(0, 5, (8,))
    saved, _ = saved_activation_bytes(model, x, y)
    assert saved == pytest.approx(8 * 10 * 4 + 8 * 20 * 4 + 8 * 5 * 4 + 8 * 8, abs=8)


def test_traced_peak_holds_gradients_and_momentum_at_once() -> None:
    """The second step's backward holds every gradient and momentum buffer together."""
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 5))
    params = sum(p.numel() for p in model.parameters()) * 4
    est = estimate_training(model, (100,), batch_size=8, num_classes=5)  # type: ignore[arg-type]
    assert est.resident_mb * MB == params and est.message_mb == 0  # received: freed as loaded
    assert est.phase_mb("load") * MB == params + 200 * 100 * 4  # the state + its largest array
    assert 2 * params < est.phase_mb("train") * MB < 2.5 * params  # + activations, input
    largest = max(est.phase_mb(name) for name in ("load", "train", "reply"))
    assert est.total_mb == est.resident_mb + largest


@pytest.mark.parametrize("micro", [0, 4])
def test_extrapolated_peak_equals_a_trace_at_the_batch(micro: int) -> None:
    """Probes at 2, 3, 4 samples give the peak at 32 exactly."""
    key, step = CNN, Step(2, 1)
    plan = Plan(micro_batch=micro, checkpoint=True)
    model = StepModel.of(key, step)
    train = _plan_trainer(replace(plan, micro_batch=int(micro > 0)))
    chunks, size = (2, micro) if micro else (1, 32)
    trace = trace_call(model, train, key.input_shape, key.num_classes, size, chunks)
    est = estimate_plan(key, step, 32, plan)
    inputs = 32 * (4 * 28 * 28 + 8)
    _, prefix, _, largest = forward_terms(key, step, Plan(), size)
    weight = max(p.numel() * p.element_size() for p in model.parameters() if p.dim() == 4)
    scratch = LIBRARY_SCRATCH * max(largest, prefix // 2, weight)
    assert est.phase_mb("train") * MB == pytest.approx(max(trace) + inputs + scratch)


def test_estimates_rise_with_batch_size() -> None:
    for step in (Step(1, 3), Step(2, 1)):
        small, large = estimate_step(CNN, step, 16), estimate_step(CNN, step, 64)
        assert large.phase_mb("train") > small.phase_mb("train") + 0.5
        assert large.resident_mb == small.resident_mb
    assert estimate_full(CNN, 64).total_mb > estimate_full(CNN, 16).total_mb


def test_frozen_prefix_needs_no_gradients_or_activations() -> None:
    # Stage 2, last block: the frozen prefix is larger than the active block, yet
    # training it needs far less than training the whole model.
    grow = estimate_step(RESNET, Step(2, 4), 32)
    full = estimate_full(RESNET, 32)
    assert grow.resident_mb == pytest.approx(full.resident_mb, rel=0.1)
    assert grow.phase_mb("train") < full.phase_mb("train") / 3


# The small CNN at quarter width saves less: its weights and messages are a larger share.
@pytest.mark.parametrize("key,share", [(CNN, 0.8), (RESNET, 0.75)], ids=["cnn", "resnet"])
def test_every_step_is_cheaper_than_full_training(key: ModelKey, share: float) -> None:
    full = estimate_full(key, 64).total_mb
    worst = max(
        estimate_step(key, s, 64).total_mb for s in progressive_steps(5 if key is RESNET else 4)
    )
    assert worst < share * full


def test_estimate_is_deterministic() -> None:
    estimate_step.cache_clear()
    a = estimate_step(CNN, Step(2, 2), 32)
    estimate_step.cache_clear()
    assert estimate_step(CNN, Step(2, 2), 32) == a
    assert torch.is_grad_enabled()


def test_cuda_workspace_term_follows_pytorchs_rule() -> None:
    """Two cuBLAS threads (forward, autograd's backward) x PyTorch's chosen size."""
    assert cuda_workspace_mb((9, 0), "") == 64.0  # Hopper default: 32 MiB each
    assert cuda_workspace_mb((8, 0), "") == 2 * (8 + 0.125)  # :4096:2:16:8
    assert cuda_workspace_mb((9, 0), ":16:8") == 0.25
    assert cuda_workspace_mb((9, 0), ":4096:8:16:8") == 2 * (32 + 0.125)


@pytest.mark.slow
def test_finer_blocks_lower_resnets_worst_step() -> None:
    """One block per BasicBlock: the worst step needs less, full training the same.

    (VGG16's is not lower: its 32x32 stage sets the peak however it is cut.)
    """
    worst, full = {}, {}
    for name in ("resnet18", "resnet18_fine"):
        key = ModelKey(name, 10, (3, 32, 32), 0.25, 1)
        steps = progressive_steps(key.spec().num_blocks)
        worst[name] = max(estimate_step(key, s, 32).total_mb for s in steps)
        full[name] = estimate_full(key, 32).total_mb
    assert full["resnet18_fine"] == pytest.approx(full["resnet18"])
    assert worst["resnet18_fine"] < 0.9 * worst["resnet18"]
