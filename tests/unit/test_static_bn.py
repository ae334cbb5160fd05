"""Static BN: per-node statistics of the global model, pooled exactly."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from profl_strategy.memory.model import estimate_forward, estimate_full
from profl_strategy.methods.baselines.static_bn import local_statistics, pool_statistics
from profl_strategy.task.model_key import ModelKey


def _moments(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"bn.running_mean": x.mean(0), "bn.running_var": x.var(0)}


def test_pooled_statistics_equal_those_of_all_data() -> None:
    """Non-IID nodes (shifted means): the pooled variance includes the spread of the means."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (300, 4))
    b = rng.normal(3.0, 2.0, (100, 4))
    pooled = pool_statistics([(_moments(a), 300.0), (_moments(b), 100.0)])
    whole = _moments(np.concatenate([a, b]))
    for k, v in whole.items():
        np.testing.assert_allclose(pooled[k], v, rtol=1e-5)


def test_local_statistics_are_the_batch_moments_of_the_global_model() -> None:
    """Stale running statistics are replaced by those of the data seen, weights unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))
    model[1].running_mean.fill_(100.0)
    weights = model[0].weight.detach().clone()
    x = torch.randn(16, 3, 8, 8)
    stats = local_statistics(model, [x[:8], x[8:]], torch.device("cpu"))
    with torch.no_grad():
        h = model[0](x)
    halves = [h[:8], h[8:]]
    mean = torch.stack([t.mean((0, 2, 3)) for t in halves]).mean(0)
    var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in halves]).mean(0)
    np.testing.assert_allclose(stats["1.running_mean"], mean.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["1.running_var"], var.numpy(), rtol=1e-4, atol=1e-6)
    assert torch.equal(model[0].weight, weights)


def test_forward_pass_needs_less_than_training() -> None:
    key = ModelKey("resnet18", 10, (3, 32, 32), 0.125)
    forward, train = estimate_forward(key, 32), estimate_full(key, 32)
    assert [name for name, _ in forward.phases] == ["forward"]  # no gradients, no state
    assert 0 < forward.total_mb < train.total_mb / 2
