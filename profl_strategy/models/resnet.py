"""CIFAR-style ResNet-18/34 split into a stem and its residual stages (or BasicBlocks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, conv3x3

from profl_strategy.models.base import BlockNetSpec
from profl_strategy.models.blocknet import check_index, check_shape, scale

_PLANES = (64, 128, 256, 512)
_STRIDES = (1, 2, 2, 2)
LAYERS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}


def init_like_resnet(module: nn.Module) -> nn.Module:
    """Apply the initialisation ``torchvision.models.ResNet.__init__`` uses.

    Pieces are built one at a time here, so the whole-model init loop of
    torchvision never runs and must be repeated per piece.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return module


class ConvBNReLU(nn.Module):
    """``conv1``/``bn1``/``relu``: the CIFAR stem and the head of a BasicBlock.

    The attribute names match ``ResNet`` and ``BasicBlock`` so state-dict keys
    line up with torchvision's and with the residual block it stands in for.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))


class ResNetHead(nn.Module):
    """Global average pool and the ``fc`` classifier, as in ``ResNet.forward``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _LayerBuilder:
    """Just enough ``ResNet`` state to borrow its ``_make_layer``.

    This reuses torchvision's stage construction (downsample rule included)
    without building the other stages.
    """

    _make_layer = ResNet._make_layer

    def __init__(self, inplanes: int) -> None:
        self.inplanes = inplanes
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self._norm_layer = nn.BatchNorm2d


class ResNetSpec(BlockNetSpec):
    """ResNet with BasicBlocks, a 3x3 stride-1 stem and no max-pool.

    Block 0 is the stem (``conv1``, ``bn1``, ``relu``). With ``fine=False``
    blocks 1-4 are ``layer1``-``layer4``; with ``fine=True`` every BasicBlock
    is a block of its own (ResNet-18: 1 + 8 blocks), which lowers the peak of
    the step with the largest feature maps. Either way a block is an
    ``nn.Sequential`` of BasicBlocks, so keys read ``blocks.{t}.{i}.conv1…``.

    Parameters
    ----------
    layers : Sequence[int]
        BasicBlocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    num_classes : int
        Size of the classifier output.
    input_shape : tuple[int, int, int]
        ``(channels, height, width)`` of one input image.
    width : float
        Multiplier for the stage widths 64, 128, 256, 512.
    fine : bool
        One block per BasicBlock instead of one per stage.
    """

    def __init__(
        self,
        layers: Sequence[int],
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: float = 1.0,
        fine: bool = False,
    ) -> None:
        check_shape(input_shape, num_classes)
        if len(layers) != len(_PLANES):
            raise ValueError(f"layers must have {len(_PLANES)} entries, got {layers!r}")
        self.layers = tuple(layers)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)  # type: ignore[assignment]
        planes = [scale(p, width) for p in _PLANES]
        # Blocks after the stem: (stride of the first BasicBlock, BasicBlocks in it).
        self.units: list[tuple[int, int]] = []
        # Output channels of each block; the stem outputs stage 1's width.
        self.channels = [input_shape[0], planes[0]]
        for p, stride, n in zip(planes, _STRIDES, self.layers, strict=True):
            parts = [(stride, 1)] + [(1, 1)] * (n - 1) if fine else [(stride, n)]
            self.units += parts
            self.channels += [p] * len(parts)
        self.num_blocks = 1 + len(self.units)

    def make_block(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        if t == 0:
            return init_like_resnet(ConvBNReLU(self.channels[0], self.channels[1]))
        stride, count = self.units[t - 1]
        builder = _LayerBuilder(self.channels[t])
        layer = builder._make_layer(BasicBlock, self.channels[t + 1], count, stride)
        return init_like_resnet(layer)

    def make_head(self) -> nn.Module:
        return ResNetHead(self.channels[-1], self.num_classes)

    def make_standin(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        if t == 0:
            return self.make_block(0)
        # Index "0" mirrors the block's first BasicBlock, so its conv1/bn1 keys
        # and shapes match the real block's.
        stride = self.units[t - 1][0]
        first = ConvBNReLU(self.channels[t], self.channels[t + 1], stride)
        return init_like_resnet(nn.Sequential(first))
