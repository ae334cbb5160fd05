"""The sub-model a client trains at one ProFL step, keyed like the global model.

The global state holds four families of modules, each with a fixed key prefix:

- ``blocks.{t}``: block ``t`` of the real model;
- ``head``: the model's own classifier (the output module of the last block);
- ``front.{t}``: stage-1 "basic layers" that feed block ``t`` while the real
  earlier blocks are not trained yet;
- ``out.{t}``: output module of block ``t < T - 1``: stand-ins for the next
  blocks followed by a classifier.

A :class:`StepModel` contains only the modules one step needs, under the same
keys, so a client's ``state_dict`` is a subset of the global one and the
server can merge replies key by key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from profl_strategy.models.base import BlockNetSpec

STAGE_FULL = 0  # ordinary full-model training (the FedAvg and ExclusiveFL baselines)
STAGE_SHRINK = 1
STAGE_GROW = 2


@dataclass(frozen=True)
class Step:
    """One step of the schedule: which stage, and which block is trained."""

    stage: int
    block: int

    def __str__(self) -> str:
        return f"s{self.stage}b{self.block}"


def block_shapes(spec: BlockNetSpec) -> list[tuple[int, ...]]:
    """Per-sample shape entering each block, and the last block's output shape.

    Cached on the spec: output modules and fronts are shaped by it.
    """
    cached = getattr(spec, "_profl_shapes", None)
    if cached is None:
        x = torch.zeros(1, *spec.input_shape)
        cached = [tuple(x.shape[1:])]
        # Building blocks draws random numbers; keep the caller's RNG stream intact.
        with torch.random.fork_rng(), torch.no_grad():
            for t in range(spec.num_blocks):
                x = spec.make_block(t).eval()(x)
                cached.append(tuple(x.shape[1:]))
        spec._profl_shapes = cached  # type: ignore[attr-defined]
    return cached


class Front(nn.Module):
    """Stage-1 "basic layers" that feed block ``t`` an input of the right shape.

    For image-like inputs: average-pool the image to block ``t``'s resolution,
    then one conv + BN + ReLU to its channels. It costs a single low-resolution
    feature map, far less than the real blocks ``0 .. t-1``. For token inputs
    (ViT) it is the chain of the earlier blocks' stand-ins.
    """

    def __init__(self, spec: BlockNetSpec, t: int) -> None:
        super().__init__()
        shape_in, shape_t = spec.input_shape, block_shapes(spec)[t]
        if len(shape_t) == 3:
            self.layers = nn.Sequential(
                nn.AdaptiveAvgPool2d(shape_t[1:]),
                nn.Conv2d(shape_in[0], shape_t[0], 3, padding=1, bias=False),
                nn.BatchNorm2d(shape_t[0]),
                nn.ReLU(inplace=True),
            )
        else:  # tokens: the embedding's stand-in, plus stand-ins where shapes change
            shapes = block_shapes(spec)
            keep = [0] + [j for j in range(1, t) if shapes[j] != shapes[j + 1]]
            self.layers = nn.Sequential(*(spec.make_standin(j) for j in keep))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OutputModule(nn.Module):
    """Stand-ins for up to ``depth`` blocks after ``t``, then a classifier.

    It lets block ``t`` learn the features the later blocks will need from it,
    at a fraction of their memory. ``depth = 0`` stands in for every later
    block and ends with the model's own head; a smaller depth ends with global
    pooling and a linear layer on the last stand-in's channels.
    """

    def __init__(self, spec: BlockNetSpec, t: int, depth: int = 0) -> None:
        super().__init__()
        last = spec.num_blocks - 1
        end = last if depth <= 0 else min(last, t + depth)
        self.standins = nn.ModuleList(spec.make_standin(j) for j in range(t + 1, end + 1))
        shape = block_shapes(spec)[end + 1]
        if end == last or len(shape) != 3:
            self.head = spec.make_head()
        else:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], spec.num_classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for standin in self.standins:
            x = standin(x)
        return self.head(x)


class StepModel(nn.Module):
    """Frozen or stand-in prefix, the active block, and its output module.

    In stage 1 the prefix is the trainable :class:`Front` ``front.{t}``; in
    stage 2 it is the real blocks ``0 .. t-1``, frozen: they run in eval mode
    under ``torch.no_grad()``, so they store no activations and get no
    gradients. Blocks after ``t`` are never built.
    """

    def __init__(self, spec: BlockNetSpec, step: Step, out_depth: int = 0) -> None:
        super().__init__()
        t, last = step.block, spec.num_blocks - 1
        if not 0 <= t <= last:
            raise ValueError(f"block {t} is out of range 0..{last}")
        if step.stage not in (STAGE_FULL, STAGE_SHRINK, STAGE_GROW):
            raise ValueError(f"stage must be 0, 1 or 2, got {step.stage}")
        if step.stage == STAGE_FULL and t != last:
            raise ValueError(f"full-model training is step (0, {last}), got block {t}")
        self.step = step
        real_prefix = step.stage in (STAGE_GROW, STAGE_FULL)
        self.blocks = nn.ModuleDict(
            {str(j): spec.make_block(j) for j in range(t)} if real_prefix else {}
        )
        self.blocks[str(t)] = spec.make_block(t)
        shrink = step.stage == STAGE_SHRINK
        self.front = nn.ModuleDict({str(t): Front(spec, t)} if t > 0 and shrink else {})
        self.out = nn.ModuleDict({str(t): OutputModule(spec, t, out_depth)} if t < last else {})
        self.head = spec.make_head() if t == last else None
        for p in self.frozen_modules().parameters():
            p.requires_grad_(False)

    def frozen_modules(self) -> nn.ModuleList:
        """The real blocks before the active one (empty in stage 1)."""
        if self.step.stage != STAGE_GROW:
            return nn.ModuleList()
        return nn.ModuleList(self.blocks[str(j)] for j in range(self.step.block))

    def train(self, mode: bool = True) -> StepModel:
        """Keep frozen blocks in eval mode so their BatchNorm statistics stay put."""
        super().train(mode)
        self.frozen_modules().eval()
        return self

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the active block."""
        t = self.step.block
        if self.step.stage == STAGE_FULL:
            for j in range(t):
                x = self.blocks[str(j)](x)
            return x
        if self.step.stage == STAGE_GROW:
            with torch.no_grad():
                for j in range(t):
                    x = self.blocks[str(j)](x)
            return x
        return self.front[str(t)](x) if t > 0 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = str(self.step.block)
        x = self.blocks[t](self.prefix(x))
        return self.head(x) if self.head is not None else self.out[t](x)

    def trainable_keys(self) -> list[str]:
        """State keys this step updates: everything except the frozen prefix."""
        frozen = tuple(f"blocks.{j}." for j in range(self.step.block))
        if self.step.stage != STAGE_GROW:
            return list(self.state_dict())
        return [k for k in self.state_dict() if not k.startswith(frozen)]


class GlobalModel(nn.Module):
    """Every module any step may need: the whole progressive state."""

    def __init__(self, spec: BlockNetSpec, out_depth: int = 0) -> None:
        super().__init__()
        last = spec.num_blocks - 1
        self.blocks = nn.ModuleList(spec.make_block(t) for t in range(spec.num_blocks))
        self.head = spec.make_head()
        self.front = nn.ModuleDict({str(t): Front(spec, t) for t in range(1, last + 1)})
        self.out = nn.ModuleDict({str(t): OutputModule(spec, t, out_depth) for t in range(last)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def model_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of the deliverable model: the real blocks and the head."""
    return [k for k in state if k.startswith(("blocks.", "head."))]
