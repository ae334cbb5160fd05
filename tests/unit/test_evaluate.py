"""Centralized evaluation: rounds may score a fixed test subset, the final model all of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from profl_strategy.task.dataset import load_test
from profl_strategy.task.evaluate import TEST_SUBSET_SEED, TestSetEvaluator


class AlwaysZero(nn.Module):
    """Predicts class 0 for every image: its accuracy is the share of 0 labels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits


def test_rounds_score_the_fixed_subset_and_the_final_model_the_whole_split(
    data_dir: Path,
) -> None:
    evaluator = TestSetEvaluator("fmnist", str(data_dir), seed=3, batch_size=512, test_size=500)
    _, labels = load_test("fmnist", data_dir=str(data_dir), seed=3)
    subset = np.random.default_rng(TEST_SUBSET_SEED).permutation(len(labels))[:500]
    expected_round = float(np.mean(labels[subset] == 0))
    assert expected_round != 0.1  # the check below could not tell the two splits apart
    assert evaluator(5, AlwaysZero())["accuracy"] == expected_round
    assert evaluator(-1, AlwaysZero())["accuracy"] == 0.1  # 1,000 of each class


def test_without_a_test_size_every_round_scores_the_whole_split(data_dir: Path) -> None:
    evaluator = TestSetEvaluator("fmnist", str(data_dir), seed=0, batch_size=512)
    assert evaluator(1, AlwaysZero())["accuracy"] == 0.1


def test_a_profl_run_cut_before_its_last_step_delivers_that_step_s_model() -> None:
    """Its output module stands in for the blocks never trained; a finished run
    delivers the full model."""
    from profl_strategy.methods.profl.step_model import STAGE_GROW
    from tests.support.strategies import profl

    s = profl()
    grow = [step for step in s.schedule.steps if step.stage == STAGE_GROW]
    s.schedule.index = s.schedule.steps.index(grow[1])  # cut inside the second block's step
    s._step_started = grow[1]
    cut = s.final_model().eval()
    assert any(k.startswith("out.") for k in cut.state_dict())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(cut(x), s.step_model(grow[1]).eval()(x))
    s.schedule.index, s._step_started = len(s.schedule.steps), grow[-1]
    assert not any(k.startswith("out.") for k in s.final_model().state_dict())
