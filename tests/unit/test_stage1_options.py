"""The authors' stage-1 choices as options: initial-weights prefix, condensing by distillation.

A ProFL run with both: ``tests/integration/test_stage1_run.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from profl_strategy.engine.errors import ConfigError
from profl_strategy.engine.step import STAGE_CONDENSE, STAGE_SHRINK, Step
from profl_strategy.memory.model import estimate_step
from profl_strategy.methods.profl.schedule import ProgressiveSchedule, progressive_steps
from profl_strategy.methods.profl.step_model import GlobalModel, StepModel, distill_loss, step_loss
from profl_strategy.run.config import compose_config
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step

CNN = ModelKey("cnn", 10, (1, 28, 28), 0.25, 0, "initial")
RESNET = ModelKey("resnet18", 10, (3, 32, 32), 0.125, 0, "pool")
CPU = torch.device("cpu")


def loader(key: ModelKey, n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *key.input_shape, generator=g)
    y = torch.randint(0, key.num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def train(model: StepModel, key: ModelKey, epochs: int = 2) -> None:
    train_step(model, loader(key), epochs=epochs, lr=0.05, momentum=0.9, weight_decay=0.0,
               proximal_mu=0.0, device=CPU, loss_fn=step_loss(model.step))  # fmt: skip


def test_initial_prefix_feeds_stage_1_through_frozen_real_blocks() -> None:
    torch.manual_seed(0)
    sub = StepModel.of(CNN, Step(STAGE_SHRINK, 2))
    assert not sub.front, "no pooled stand-in front with the initial prefix"
    x = torch.randn(4, *CNN.input_shape)
    with torch.no_grad():
        expected = sub.blocks["1"](sub.blocks["0"].eval()(x))
    assert torch.equal(sub.prefix(x), expected)
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    train(sub, CNN)
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1."))]
    assert frozen and all(torch.equal(before[k], sub.state_dict()[k]) for k in frozen)
    assert set(sub.trainable_keys()) == set(before) - set(frozen)


@pytest.mark.parametrize("key", [CNN, RESNET], ids=lambda k: f"{k.name}-{k.stage1_prefix}")
def test_condensing_trains_only_the_earlier_output_module(key: ModelKey) -> None:
    torch.manual_seed(0)
    b = key.spec().num_blocks - 2
    sub = StepModel.of(key, Step(STAGE_CONDENSE, b))
    full = GlobalModel(key.spec(), key.out_depth).state_dict()
    assert set(sub.state_dict()) <= set(full)
    assert all(k.startswith(f"out.{b - 1}.") for k in sub.trainable_keys())
    x = torch.randn(8, *key.input_shape)
    student, teacher = sub.train()(x)
    assert student.shape == teacher.shape == (8, key.num_classes)
    assert not teacher.requires_grad
    assert sub.eval()(x).shape == (8, key.num_classes)  # evaluation scores the student
    with torch.no_grad():
        gap_before = float(distill_loss(sub.train()(x), None))
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    train(sub, key, epochs=4)
    after = sub.state_dict()
    trained = set(sub.trainable_keys())
    assert all(torch.equal(before[k], after[k]) for k in before if k not in trained)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    with torch.no_grad():
        assert float(distill_loss(sub.train()(x), None)) < gap_before


def test_condensing_costs_less_memory_than_training_the_block() -> None:
    # ResNet only: on the small CNN, block 1's condensing holds a frozen teacher that
    # outweighs what it saves (traced at batch 32: 3.63 MB against shrinking's 3.27).
    key = RESNET
    for b in range(1, key.spec().num_blocks):
        condense = estimate_step(key, Step(STAGE_CONDENSE, b), 32)
        shrink = estimate_step(key, Step(STAGE_SHRINK, b), 32)
        assert condense.total_mb < shrink.total_mb, b
        assert condense.phase_mb("train") < shrink.phase_mb("train"), b


def test_schedule_runs_condensing_steps_to_their_round_count() -> None:
    steps = progressive_steps(3, shrink=True, condense=True)
    assert [str(s) for s in steps] == [
        "s1b2",
        "s3b2",
        "s1b1",
        "s3b1",
        "s1b0",
        "s2b0",
        "s2b1",
        "s2b2",
    ]
    sched = ProgressiveSchedule(3, 1, 2, 2, shrink=True, condense_rounds=3)
    assert sched.record_round(converged=True).finished == Step(STAGE_SHRINK, 2)
    assert sched.current == Step(STAGE_CONDENSE, 2)
    assert sched.record_round(converged=True) is None  # effective movement cannot end it
    assert sched.record_round(converged=True) is None
    assert sched.record_round(converged=False).reason == "round-cap"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("method.stage1_prefix=frozen", "stage1_prefix"),
        ("method.condense=kd", "condense"),
        ("method.condense_rounds=0", "condense_rounds"),
    ],  # fmt: skip
)
def test_bad_stage_1_options_stop_before_training(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        compose_config({"overrides": override})
