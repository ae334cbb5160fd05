"""The contract every block-partitioned architecture fulfils."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn


class BlockNetSpec(ABC):
    """Factory for the pieces of one architecture split into ``num_blocks`` blocks.

    ProFL trains one block at a time, so a client must be able to build a single
    block, the classifier head, or a cheap *stand-in* for a block without
    materialising the rest of the network. Block ``t`` maps the output of block
    ``t - 1`` (the image for ``t = 0``) to its own output; the head maps the last
    block's output to logits. Building the same piece twice with the same torch
    seed gives the same initial weights.
    """

    num_blocks: int
    num_classes: int
    input_shape: tuple[int, int, int]  # (channels, height, width)

    @abstractmethod
    def make_block(self, t: int) -> nn.Module:
        """Block ``t`` of the real model."""

    @abstractmethod
    def make_head(self) -> nn.Module:
        """The model's own classifier, applied after the last block."""

    @abstractmethod
    def make_standin(self, t: int) -> nn.Module:
        """A light module with block ``t``'s input and output shapes.

        Stage 1 uses stand-ins in place of blocks that are not being trained. Its
        first layers mirror the first layers of block ``t`` (same types and
        shapes), so trained block weights can be copied into it.
        """
