"""Centralized evaluation: rounds may score fixed test and validation subsets, the final
model all of both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from profl_strategy.task.dataset import load_test, load_validation
from profl_strategy.task.evaluate import TEST_SUBSET_SEED, HeldOutEvaluator


class AlwaysZero(nn.Module):
    """Predicts class 0 for every image: its accuracy is the share of 0 labels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits


def test_rounds_score_the_fixed_subset_and_the_final_model_the_whole_split(
    data_dir: Path,
) -> None:
    evaluator = HeldOutEvaluator("fmnist", str(data_dir), seed=3, batch_size=512, test_size=500)
    _, labels = load_test("fmnist", data_dir=str(data_dir), seed=3)
    subset = np.random.default_rng(TEST_SUBSET_SEED).permutation(len(labels))[:500]
    expected_round = float(np.mean(labels[subset] == 0))
    assert expected_round != 0.1  # the check below could not tell the two splits apart
    assert evaluator(5, AlwaysZero())["accuracy"] == expected_round
    assert evaluator(-1, AlwaysZero())["accuracy"] == 0.1  # 1,000 of each class


def test_without_a_test_size_every_round_scores_the_whole_split(data_dir: Path) -> None:
    evaluator = HeldOutEvaluator("fmnist", str(data_dir), seed=0, batch_size=512)
    scores = evaluator(1, AlwaysZero())
    assert scores["accuracy"] == 0.1 and "val_accuracy" not in scores  # no validation split


def test_validation_rounds_score_a_subset_as_large_as_the_test_one(data_dir: Path) -> None:
    """The validation split costs a round at most ``test_size`` images, as the test split;
    the final model is scored on all of it."""
    evaluator = HeldOutEvaluator(
        "fmnist", str(data_dir), seed=3, batch_size=512, test_size=500, val_fraction=0.1
    )
    _, labels = load_validation("fmnist", data_dir=str(data_dir), seed=3, val_fraction=0.1)
    assert evaluator.val_examples == len(labels) == 6000
    subset = np.random.default_rng(TEST_SUBSET_SEED).permutation(len(labels))[:500]
    per_round, final = evaluator(5, AlwaysZero()), evaluator(-1, AlwaysZero())
    assert per_round["val_accuracy"] == float(np.mean(labels[subset] == 0))
    assert final["val_accuracy"] == float(np.mean(labels == 0))
    assert final["val_accuracy"] != 0.1  # a random draw: not the test split's balance
    assert final["accuracy"] == 0.1 and set(final) == {
        "accuracy",
        "loss",
        "val_accuracy",
        "val_loss",
    }


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
