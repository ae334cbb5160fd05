"""A small Vision Transformer split into patch embedding and encoder-layer groups."""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock

from profl_strategy.models.base import BlockNetSpec
from profl_strategy.models.blocknet import check_index, check_shape, scale

_norm_layer = partial(nn.LayerNorm, eps=1e-6)  # torchvision's ViT default


class PatchEmbedding(nn.Module):
    """Everything ``VisionTransformer`` does before its first encoder layer.

    That is ``_process_input``, prepending the class token, then
    ``Encoder.forward``'s position embedding and dropout, in the same order
    and with the same initialisation. ``conv_proj`` takes any channel count,
    unlike torchvision's, which assumes RGB.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        patch_size: int,
        hidden_dim: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, patch_size)
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)  # type: ignore[arg-type]
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.patch_size
        x = self.conv_proj(x).reshape(n, self.hidden_dim, (h // p) * (w // p))
        x = x.permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class ViTHead(nn.Module):
    """The encoder's final LayerNorm, class-token pooling and ``heads``.

    ``ln`` and ``heads`` are named as ``encoder.ln`` and ``heads`` in
    ``VisionTransformer`` so weights map one to one.
    """

    def __init__(self, hidden_dim: int, num_classes: int) -> None:
        super().__init__()
        self.ln = _norm_layer(hidden_dim)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))
        # torchvision zero-initialises the classifier; keep its behaviour.
        nn.init.zeros_(self.heads.head.weight)  # type: ignore[arg-type, union-attr]
        nn.init.zeros_(self.heads.head.bias)  # type: ignore[arg-type, union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.ln(x)[:, 0])


class ViTSpec(BlockNetSpec):
    """ViT with ``num_layers`` encoder layers grouped ``layers_per_block`` at a time.

    Block 0 is the patch embedding; every later block is a group of encoder
    layers; the head is the final LayerNorm plus the linear classifier.

    Parameters
    ----------
    num_classes : int
        Size of the classifier output.
    input_shape : tuple[int, int, int]
        ``(channels, height, width)`` of one square input image.
    width : float
        Multiplier for the hidden size 192, rounded to a multiple of
        ``num_heads``; the MLP size is four times the hidden size.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: float = 1.0,
        *,
        patch_size: int = 4,
        num_layers: int = 8,
        num_heads: int = 4,
        layers_per_block: int = 2,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        check_shape(input_shape, num_classes)
        _, height, image_width = input_shape
        if height != image_width or height % patch_size:
            raise ValueError(
                f"vit needs square images whose side is a multiple of the patch "
                f"size {patch_size}, got input_shape={tuple(input_shape)!r}"
            )
        if num_layers % layers_per_block:
            raise ValueError(
                f"num_layers={num_layers} is not a multiple of layers_per_block={layers_per_block}"
            )
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)  # type: ignore[assignment]
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.hidden_dim = num_heads * max(1, round(scale(192, width) / num_heads))
        self.mlp_dim = 4 * self.hidden_dim
        self.layers_per_block = layers_per_block
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.num_blocks = 1 + num_layers // layers_per_block

    def _encoder_block(self) -> EncoderBlock:
        return EncoderBlock(
            self.num_heads,
            self.hidden_dim,
            self.mlp_dim,
            self.dropout,
            self.attention_dropout,
            _norm_layer,
        )

    def make_block(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        if t == 0:
            channels, image_size, _ = self.input_shape
            return PatchEmbedding(
                channels, image_size, self.patch_size, self.hidden_dim, self.dropout
            )
        return nn.Sequential(*(self._encoder_block() for _ in range(self.layers_per_block)))

    def make_head(self) -> nn.Module:
        return ViTHead(self.hidden_dim, self.num_classes)

    def make_standin(self, t: int) -> nn.Module:
        check_index(t, self.num_blocks)
        if t == 0:
            return self.make_block(0)
        # Index "0" matches the group's first encoder layer key for key.
        return nn.Sequential(self._encoder_block())
