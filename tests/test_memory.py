"""The memory model: exact saved-tensor counts, monotone in batch, below full training."""

import pytest
import torch
from torch import nn

from profl_strategy.memory import (
    MB,
    cuda_workspace_mb,
    estimate_full,
    estimate_step,
    estimate_training,
)
from profl_strategy.schedule import progressive_steps
from profl_strategy.step_model import Step
from profl_strategy.task.model_key import ModelKey

CNN = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1)
RESNET = ModelKey("resnet18", 10, (3, 32, 32), 0.25, 1)


def test_saved_tensors_match_a_hand_count() -> None:
    # Linear saves its input; ReLU saves its output; Linear saves its input (the
    # same storage as ReLU's output); cross-entropy saves its log-softmax output
    # and the int64 targets (plus a scalar).
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    est = estimate_training(model, (10,), batch_size=8, num_classes=5)  # type: ignore[arg-type]
    expected = 8 * 10 * 4 + 8 * 20 * 4 + 8 * 5 * 4 + 8 * 8
    assert est.activations_mb * MB == pytest.approx(expected, abs=8)
    params = sum(p.numel() for p in model.parameters()) * 4
    assert est.params_mb * MB == params and est.grads_mb * MB == params
    assert est.optimizer_mb * MB == params  # one momentum buffer per parameter


def test_estimates_rise_with_batch_size() -> None:
    for step in (Step(1, 3), Step(2, 1)):
        small, large = estimate_step(CNN, step, 16), estimate_step(CNN, step, 64)
        assert large.activations_mb > 3 * small.activations_mb
        assert large.params_mb == small.params_mb
    assert estimate_full(CNN, 64).total_mb > estimate_full(CNN, 16).total_mb


def test_frozen_prefix_saves_nothing_for_backward() -> None:
    # Stage 2, last block: the frozen prefix is larger than the active block,
    # yet only the active block's activations count.
    grow = estimate_step(RESNET, Step(2, 4), 32)
    assert grow.grads_mb < grow.params_mb  # the prefix's weights get no gradients
    assert grow.activations_mb < estimate_full(RESNET, 32).activations_mb / 4


@pytest.mark.parametrize("key", [CNN, RESNET])
def test_every_step_is_cheaper_than_full_training(key: ModelKey) -> None:
    full = estimate_full(key, 64).total_mb
    worst = max(
        estimate_step(key, s, 64).total_mb for s in progressive_steps(5 if key is RESNET else 4)
    )
    assert worst < 0.75 * full


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
