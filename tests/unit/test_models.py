"""Block-partitioned models: exact recomposition, shapes, stand-ins, errors."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet34
from torchvision.models.resnet import ResNet, conv3x3
from torchvision.models.vgg import cfgs, make_layers
from torchvision.models.vision_transformer import VisionTransformer

from profl_strategy.models import (
    MODEL_NAMES,
    BlockNet,
    BlockNetSpec,
    build_full_model,
    build_spec,
)

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)
SMALL = 0.125  # keeps every model tiny; exactness does not depend on size
Shape = tuple[int, int, int]


def spec_of(name: str, shape: Shape = CIFAR, width: float = SMALL) -> BlockNetSpec:
    return build_spec(name, num_classes=10, input_shape=shape, width=width)


def randomize(model: nn.Module) -> nn.Module:
    """Replace every parameter and BN statistic so no piece is trivially zero."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                fresh = torch.randn_like(tensor) * 0.1
                tensor.copy_(fresh.abs() + 0.5 if "running_var" in name else fresh)
    return model


def load_renamed(ref: nn.Module, model: BlockNet, rename: Callable[[str], str]) -> None:
    """Load ``model``'s weights into ``ref`` under ``rename(key)``, strictly."""
    state = {rename(k): v for k, v in model.state_dict().items()}
    ref.load_state_dict(state, strict=True)


def assert_same_forward(model: nn.Module, ref: nn.Module, shape: Shape) -> None:
    x = torch.randn(2, *shape)
    for train in (True, False):
        model.train(train)
        ref.train(train)
        torch.manual_seed(0)
        out = model(x)
        torch.manual_seed(0)
        assert torch.equal(out, ref(x)), f"mismatch in train={train}"


def test_cnn_matches_flat_sequential() -> None:
    model = randomize(build_full_model(spec_of("cnn")))
    layers, c_in = [], 3
    for c_out, pool in ((4, True), (8, True), (16, True), (32, False)):
        for c in (c_in, c_out):  # two convs per block
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.MaxPool2d(2)] if pool else []
        c_in = c_out
    ref = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    ref.load_state_dict(dict(zip(ref.state_dict(), model.state_dict().values(), strict=True)))
    assert_same_forward(model, ref, CIFAR)


@pytest.mark.parametrize(
    ("name", "factory", "shape"),
    [
        ("resnet18", resnet18, CIFAR),
        ("resnet34", resnet34, CIFAR),
        ("resnet18", resnet18, MNIST),
    ],
    ids=["resnet18-cifar", "resnet34-cifar", "resnet18-mnist"],
)
def test_resnet_matches_torchvision(
    name: str, factory: Callable[..., ResNet], shape: Shape
) -> None:
    model = randomize(build_full_model(spec_of(name, shape, width=1.0)))
    ref = factory(num_classes=10)  # the usual torchvision model, CIFAR stem
    ref.conv1 = conv3x3(shape[0], 64)
    ref.maxpool = nn.Identity()

    def rename(key: str) -> str:
        key = re.sub(r"^blocks\.0\.", "", key)
        key = re.sub(r"^blocks\.(\d)\.", r"layer\1.", key)
        return key.removeprefix("head.")

    load_renamed(ref, model, rename)
    assert_same_forward(model, ref, shape)


def test_vgg_matches_features_then_head() -> None:
    spec = spec_of("vgg16")
    model = randomize(build_full_model(spec))
    cfg = [v if v == "M" else max(1, round(v * SMALL)) for v in cfgs["D"]]
    features = make_layers(cfg, batch_norm=True)
    ref = nn.Sequential(features, spec.make_head())
    offsets = [0]
    for block in model.blocks:
        offsets.append(offsets[-1] + len(block))
    assert offsets[-1] == len(features)

    def rename(key: str) -> str:
        if key.startswith("head."):
            return "1." + key.removeprefix("head.")
        _, t, i, rest = key.split(".", 3)
        return f"0.{offsets[int(t)] + int(i)}.{rest}"

    load_renamed(ref, model, rename)
    assert_same_forward(model, ref, CIFAR)


@pytest.mark.parametrize("shape", [CIFAR, MNIST], ids=["cifar", "mnist"])
def test_vit_matches_torchvision(shape: Shape) -> None:
    spec = spec_of("vit", shape)
    model = randomize(build_full_model(spec))
    ref = VisionTransformer(
        image_size=shape[1],
        patch_size=4,
        num_layers=8,
        num_heads=4,
        hidden_dim=spec.hidden_dim,
        mlp_dim=4 * spec.hidden_dim,
        num_classes=10,
    )
    ref.conv_proj = nn.Conv2d(shape[0], spec.hidden_dim, 4, 4)

    def rename(key: str) -> str:
        key = key.replace("blocks.0.pos_embedding", "encoder.pos_embedding")
        key = key.removeprefix("blocks.0.")
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.(.*)", key):
            t, i, rest = int(m[1]), int(m[2]), m[3]
            return f"encoder.layers.encoder_layer_{2 * (t - 1) + i}.{rest}"
        return key.replace("head.ln.", "encoder.ln.").removeprefix("head.")

    load_renamed(ref, model, rename)
    assert_same_forward(model, ref, shape)


CASES = [(n, CIFAR) for n in MODEL_NAMES] + [(n, MNIST) for n in ("cnn", "resnet18", "vit")]


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_blocks_chain_and_standins_match_shapes(name: str, shape: Shape) -> None:
    spec = spec_of(name, shape)
    assert spec.input_shape == shape and spec.num_classes == 10
    x = torch.randn(2, *shape)
    for t in range(spec.num_blocks):
        block, standin = spec.make_block(t).eval(), spec.make_standin(t).eval()
        # The stand-in is cheaper (or the same) and takes block t's weights.
        assert _numel(standin) <= _numel(block)
        block_state = block.state_dict()
        for key, value in standin.state_dict().items():
            assert block_state[key].shape == value.shape, key
        standin.load_state_dict({k: block_state[k] for k in standin.state_dict()})
        y = block(x)
        assert standin(x).shape == y.shape, f"stand-in {t}"
        x = y
    assert spec.make_head()(x).shape == (2, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_gives_same_weights(name: str) -> None:
    spec = spec_of(name)
    makers = [spec.make_head]
    for t in range(spec.num_blocks):
        makers += [lambda t=t: spec.make_block(t), lambda t=t: spec.make_standin(t)]
    for make in makers:
        torch.manual_seed(0)
        first = make().state_dict()
        torch.manual_seed(0)
        second = make().state_dict()
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)


def test_full_model_keys_are_blocks_then_head() -> None:
    model = build_full_model(spec_of("resnet18"))
    assert len(model.blocks) == 5
    assert all(re.match(r"(blocks\.[0-4]|head)\.", k) for k in model.state_dict())


def test_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"'mlp'.*resnet18"):
        build_spec("mlp", num_classes=10, input_shape=CIFAR)


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_non_positive_width_rejected(width: float) -> None:
    with pytest.raises(ValueError, match="width must be > 0"):
        build_spec("cnn", num_classes=10, input_shape=CIFAR, width=width)


def test_unsupported_shapes_and_indices_rejected() -> None:
    with pytest.raises(ValueError, match="at least 32x32"):
        spec_of("vgg16", MNIST)
    with pytest.raises(ValueError, match="square"):
        spec_of("vit", (3, 32, 28))
    with pytest.raises(IndexError):
        spec_of("cnn").make_block(4)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _spec_params(spec: BlockNetSpec) -> int:
    pieces = [spec.make_block(t) for t in range(spec.num_blocks)]
    return sum(map(_numel, pieces)) + _numel(spec.make_head())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameters_shrink_with_width(name: str) -> None:
    full = _spec_params(spec_of(name, width=1.0))
    quarter = _spec_params(spec_of(name, width=0.25))
    assert quarter < full / 8


@pytest.mark.parametrize(
    ("name", "blocks"), [("resnet18", 9), ("resnet34", 17), ("vgg16", 13)], ids=str
)
def test_fine_split_is_the_same_network(name: str, blocks: int) -> None:
    """One block per BasicBlock / conv: same tensors in the same order, same forward."""
    stage = randomize(build_full_model(spec_of(name)))
    fine = build_full_model(spec_of(name + "_fine"))
    assert len(fine.blocks) == blocks
    shapes = [tuple(t.shape) for t in stage.state_dict().values()]
    assert [tuple(t.shape) for t in fine.state_dict().values()] == shapes
    fine.load_state_dict(dict(zip(fine.state_dict(), stage.state_dict().values(), strict=True)))
    assert_same_forward(fine, stage, CIFAR)
