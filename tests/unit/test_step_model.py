"""Step sub-models: keys, freezing, stage-1 hand-over."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from profl_strategy.engine.step import Step
from profl_strategy.methods.profl.condense import carry_forward, condense_into_output_module
from profl_strategy.methods.profl.schedule import progressive_steps
from profl_strategy.methods.profl.step_model import GlobalModel, StepModel
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step

KEYS = [
    ModelKey("cnn", 10, (1, 28, 28), 0.25, 1),
    ModelKey("resnet18", 10, (3, 32, 32), 0.125, 0),
    ModelKey("vit", 10, (3, 32, 32), 0.25, 2),
    ModelKey("vgg16_fine", 10, (3, 32, 32), 0.125, 1),
    ModelKey("resnet18_fine", 10, (3, 32, 32), 0.125, 2),
]


def loader(key: ModelKey, n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *key.input_shape, generator=g)
    y = torch.randint(0, key.num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.name)
def test_every_step_is_a_keyed_subset_of_the_global_model(key: ModelKey) -> None:
    spec = key.spec()
    full = GlobalModel(spec, key.out_depth).state_dict()
    x = torch.randn(2, *key.input_shape)
    for step in progressive_steps(spec.num_blocks):
        sub = StepModel(spec, step, key.out_depth)
        keys = set(sub.state_dict())
        assert keys <= set(full), step
        assert all(full[k].shape == v.shape for k, v in sub.state_dict().items())
        assert sub(x).shape == (2, key.num_classes)
        later = {f"blocks.{j}." for j in range(step.block + 1, spec.num_blocks)}
        assert not any(k.startswith(tuple(later)) for k in keys), "later blocks are on the client"


@pytest.mark.parametrize("key", KEYS[:2], ids=lambda k: k.name)
def test_frozen_blocks_do_not_change_in_stage_2(key: ModelKey) -> None:
    spec = key.spec()
    torch.manual_seed(0)
    sub = StepModel(spec, Step(2, 2), key.out_depth)
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    train_step(
        sub,
        loader(key),
        epochs=2,
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        proximal_mu=0.0,
        device=torch.device("cpu"),
    )
    after = sub.state_dict()
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1."))]
    assert frozen, "the prefix must be on the client"
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # BN buffers included
    assert set(sub.trainable_keys()) == set(before) - set(frozen)
    assert any(not torch.equal(before[k], after[k]) for k in sub.trainable_keys())


def test_frozen_prefix_records_no_autograd_graph() -> None:
    key = KEYS[0]
    sub = StepModel(key.spec(), Step(2, 3), key.out_depth).train()
    feats = sub.prefix(torch.randn(2, *key.input_shape))
    assert not feats.requires_grad
    assert all(not m.training for b in sub.frozen_modules() for m in b.modules())


def test_stage_1_hands_trained_layers_to_the_earlier_output_module() -> None:
    key = KEYS[1]
    model = GlobalModel(key.spec(), key.out_depth)
    copied = condense_into_output_module(model, 2)
    assert copied >= 2  # the stand-in's conv and BN
    conv_block = model.blocks[3][0].conv1.weight
    conv_standin = next(p for n, p in model.out["2"].standins[0].named_parameters() if p.dim() == 4)
    assert torch.equal(conv_block, conv_standin)
    with pytest.raises(ValueError):
        condense_into_output_module(model, 4)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage2_handover_carries_the_trained_output_module_forward() -> None:
    torch.manual_seed(0)
    spec = ModelKey("cnn", 10, (1, 28, 28), 0.5).spec()
    model = GlobalModel(spec, out_depth=0)  # every output module ends in the model's head
    block1 = {k: v.clone() for k, v in model.blocks[1].state_dict().items()}
    assert carry_forward(model, 1, block_trained=True) > 0
    assert _same(model.out["1"].head, model.out["0"].head)
    for mine, theirs in zip(model.out["1"].standins, model.out["0"].standins[1:], strict=True):
        assert _same(mine, theirs)
    # a block stage 1 trained keeps its weights ...
    assert all(torch.equal(v, block1[k]) for k, v in model.blocks[1].state_dict().items())
    # ... one it never trained starts from the stand-in that was trained in its place
    carry_forward(model, 2, block_trained=False)
    first_conv = model.blocks[2][0][0].weight
    assert torch.equal(first_conv, model.out["1"].standins[0][0][0].weight)
    # the last step starts with the classifier the step before it trained
    carry_forward(model, 3, block_trained=True)
    assert _same(model.head, model.out["2"].head)
    with pytest.raises(ValueError, match="stage-2 step 0"):
        carry_forward(model, 0, block_trained=True)
