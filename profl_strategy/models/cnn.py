"""A small four-block CNN for MNIST-like (28x28 grey) and CIFAR-like inputs.

Each block holds two conv layers, as in VGG-style nets, so that a one-conv
stand-in is genuinely lighter than the block it replaces.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops import Conv2dNormActivation

from profl_strategy.models.base import BlockNetSpec
from profl_strategy.models.blocknet import check_index, check_shape, scale

_CHANNELS = (32, 64, 128, 256)
_POOLED = (True, True, True, False)  # the last block keeps its spatial size


def conv_bn_relu(in_channels: int, out_channels: int, pool: bool, convs: int = 1) -> nn.Sequential:
    """``convs`` x (Conv3x3 + BN + ReLU), optionally followed by a 2x2 max-pool.

    The convs have no bias because the following BatchNorm would cancel it.
    """
    layer = nn.Sequential(
        *(
            Conv2dNormActivation(in_channels if i == 0 else out_channels, out_channels, 3)
            for i in range(convs)
        )
    )
    if pool:
        layer.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layer


class CNNSpec(BlockNetSpec):
    """Four blocks of two convs (32, 64, 128, 256 channels times ``width``), linear head.

    Parameters
    ----------
    num_classes : int
        Size of the classifier output.
    input_shape : tuple[int, int, int]
        ``(channels, height, width)`` of one input image.
    width : float
        Multiplier for every block's channel count.
    """

    num_blocks = len(_CHANNELS)

    def __init__(
        self, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0
    ) -> None:
        check_shape(input_shape, num_classes)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)  # type: ignore[assignment]
        self.channels = [input_shape[0]] + [scale(c, width) for c in _CHANNELS]

    def make_block(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        return conv_bn_relu(self.channels[t], self.channels[t + 1], _POOLED[t], convs=2)

    def make_head(self) -> nn.Module:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(self.channels[-1], self.num_classes),
        )

    def make_standin(self, t: int) -> nn.Module:
        # One conv where the block has two: same input and output shapes, and
        # its first layer matches the block's first layer.
        check_index(t, self.num_blocks)
        return conv_bn_relu(self.channels[t], self.channels[t + 1], _POOLED[t], convs=1)
