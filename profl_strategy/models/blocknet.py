"""Pieces shared by every architecture: the recomposed network and small helpers."""

from __future__ import annotations

import torch
from torch import nn

from profl_strategy.models.base import BlockNetSpec


class BlockNet(nn.Module):
    """All blocks of a spec followed by its head, i.e. the unsplit model.

    The state-dict keys are ``blocks.{t}.…`` and ``head.…`` so that a block's
    weights can be moved between this model and a stand-alone ``make_block(t)``
    by adding or stripping the ``blocks.{t}.`` prefix.
    """

    def __init__(self, spec: BlockNetSpec) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(spec.make_block(t) for t in range(spec.num_blocks))
        self.head = spec.make_head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_full_model(spec: BlockNetSpec) -> BlockNet:
    """Materialise every block and the head of ``spec`` as one module."""
    return BlockNet(spec)


def scale(channels: int, width: float) -> int:
    """Scale a channel count by the width multiplier, keeping at least one.

    Raises
    ------
    ValueError
        If ``width`` is not positive, since no layer could be built.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, round(channels * width))


def check_index(t: int, num_blocks: int) -> None:
    """Reject block indices outside ``[0, num_blocks)``.

    Negative indices are refused too: a stray ``-1`` would otherwise silently
    build the last block.
    """
    if not 0 <= t < num_blocks:
        raise IndexError(f"block index {t} out of range for {num_blocks} blocks")


def check_shape(input_shape: tuple[int, int, int], num_classes: int) -> None:
    """Validate the common spec arguments early, with a readable message."""
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(
            f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
