"""Tail averaging: the deliverable is the mean of the last rounds' models.

In a ProFL run: ``tests/integration/test_tail_run.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from profl_strategy.engine.tail import TailAverage
from profl_strategy.methods.baselines.full_model import FullModel
from tests.support.strategies import strategy


def test_the_mean_covers_the_last_rounds_and_restarts_on_a_new_layout() -> None:
    tail = TailAverage(2)
    for value in (1.0, 2.0, 4.0):
        bn = nn.BatchNorm1d(3)
        nn.init.constant_(bn.weight, value)
        bn.num_batches_tracked.fill_(int(value))
        tail.push(bn)
    mean = tail.average()
    assert mean is not None
    assert torch.equal(mean["weight"], torch.full((3,), 3.0))  # rounds 2 and 3 only
    assert int(mean["num_batches_tracked"]) == 4  # counters: the latest
    tail.push(nn.Linear(3, 3))  # a ProFL step change: another architecture
    assert len(tail.states) == 1 and "weight" in tail.average()


def test_the_deliverable_is_averaged_and_the_global_model_is_not() -> None:
    s = strategy(FullModel)
    s.tail = TailAverage(3)
    weights = []
    for _ in range(4):  # four "rounds": the global model moves, the tail records it
        with torch.no_grad():
            for p in s.model.parameters():
                p.add_(torch.randn_like(p))
        weights.append({k: v.clone() for k, v in s.model.state_dict().items()})
        s.tail.push(s.final_model())
    delivered = s.deliverable().state_dict()
    key = next(k for k, v in delivered.items() if v.is_floating_point())
    expected = torch.stack([w[key] for w in weights[1:]]).mean(0)
    assert torch.allclose(delivered[key], expected)
    assert torch.equal(s.model.state_dict()[key], weights[-1][key])  # training goes on from it
    s.tail = None
    assert s.deliverable() is s.final_model()
