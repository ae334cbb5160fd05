"""The sub-model a client trains at one ProFL step, keyed like the global model.

The global state holds four families of modules, each with a fixed key prefix:

- ``blocks.{t}``: block ``t`` of the real model;
- ``head``: the model's own classifier (the output module of the last block);
- ``front.{t}``: stage-1 "basic layers" that feed block ``t`` while the real
  earlier blocks are not trained yet;
- ``out.{t}``: output module of block ``t < T - 1``: stand-ins for the next
  blocks followed by a classifier.

Stage 1 feeds block ``t`` either its ``front.{t}`` (``stage1_prefix="pool"``)
or the real blocks ``0 .. t-1`` frozen at their initial weights
(``"initial"``, as in the authors' example code). A condensing step
(:data:`STAGE_CONDENSE`, block ``b``) distils trained block ``b`` and its
output module into ``out.{b-1}`` (MSE between the two paths' logits).

A :class:`StepModel` contains only the modules one step needs, under the same
keys, so a client's ``state_dict`` is a subset of the global one and the
server can merge replies key by key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from profl_strategy.engine.step import (
    STAGE_CONDENSE,
    STAGE_FULL,
    STAGE_GROW,
    STAGE_SHRINK,
    STAGES,
    Step,
)
from profl_strategy.models.base import BlockNetSpec

if TYPE_CHECKING:
    from profl_strategy.task.model_key import ModelKey

STAGE1_PREFIXES = ("pool", "initial")  # method.stage1_prefix
CONDENSE_MODES = ("copy", "distill")  # method.condense


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

    In stage 1 the prefix is the trainable :class:`Front` ``front.{t}``, or with
    ``stage1_prefix="initial"`` the real blocks ``0 .. t-1`` frozen at their
    initial weights; in stage 2 it is the real blocks ``0 .. t-1``, frozen.
    Frozen modules run in eval mode under ``torch.no_grad()``, so they store no
    activations and get no gradients. Blocks after ``t`` are never built.

    A condensing step (block ``b``) holds block ``b``'s stage-1 prefix, block
    ``b`` and its output module as a frozen teacher, and ``out.{b-1}`` as the
    student; in training mode it returns ``(student, teacher)`` logits for
    :func:`distill_loss`, in eval mode the student's logits.
    """

    def __init__(
        self, spec: BlockNetSpec, step: Step, out_depth: int = 0, stage1_prefix: str = "pool"
    ) -> None:
        super().__init__()
        t, last = step.block, spec.num_blocks - 1
        if not 0 <= t <= last:
            raise ValueError(f"block {t} is out of range 0..{last}")
        if step.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {step.stage}")
        if step.stage == STAGE_FULL and t != last:
            raise ValueError(f"full-model training is step (0, {last}), got block {t}")
        if step.stage == STAGE_CONDENSE and t == 0:
            raise ValueError("block 0 has no output module before it to condense into")
        if stage1_prefix not in STAGE1_PREFIXES:
            raise ValueError(
                f"stage1_prefix must be one of {STAGE1_PREFIXES}, got {stage1_prefix!r}"
            )
        self.step, self.stage1_prefix = step, stage1_prefix
        stage1 = step.stage in (STAGE_SHRINK, STAGE_CONDENSE)
        real_prefix = not stage1 or stage1_prefix == "initial"
        self.blocks = nn.ModuleDict(
            {str(j): spec.make_block(j) for j in range(t)} if real_prefix else {}
        )
        self.blocks[str(t)] = spec.make_block(t)
        use_front = t > 0 and stage1 and not real_prefix
        self.front = nn.ModuleDict({str(t): Front(spec, t)} if use_front else {})
        self.out = nn.ModuleDict({str(t): OutputModule(spec, t, out_depth)} if t < last else {})
        if step.stage == STAGE_CONDENSE:
            self.out[str(t - 1)] = OutputModule(spec, t - 1, out_depth)
        self.head = spec.make_head() if t == last else None
        for p in self.frozen_modules().parameters():
            p.requires_grad_(False)

    def frozen_modules(self) -> nn.ModuleList:
        """The modules this step runs but does not train (empty without a frozen prefix)."""
        t, stage = self.step.block, self.step.stage
        frozen: list[nn.Module] = []
        if stage == STAGE_GROW or (stage != STAGE_FULL and self.stage1_prefix == "initial"):
            frozen += [self.blocks[str(j)] for j in range(t)]
        if stage == STAGE_CONDENSE:
            frozen += list(self.front.values()) + [self.blocks[str(t)], self._teacher_head()]
        return nn.ModuleList(frozen)

    def _teacher_head(self) -> nn.Module:
        t = self.step.block
        return self.head if self.head is not None else self.out[str(t)]

    def train(self, mode: bool = True) -> StepModel:
        """Keep frozen modules in eval mode so their BatchNorm statistics stay put."""
        super().train(mode)
        self.frozen_modules().eval()
        return self

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Input of the active block."""
        t, stage = self.step.block, self.step.stage
        if stage == STAGE_FULL:
            for j in range(t):
                x = self.blocks[str(j)](x)
            return x
        if t > 0 and str(t) in self.front:
            front = self.front[str(t)]
            if stage != STAGE_CONDENSE:
                return front(x)
            with torch.no_grad():
                return front(x)
        with torch.no_grad():
            for j in range(t):
                x = self.blocks[str(j)](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        t = self.step.block
        if self.step.stage == STAGE_CONDENSE:
            h = self.prefix(x)
            student = self.out[str(t - 1)](h)
            if not self.training:
                return student
            with torch.no_grad():
                teacher = self._teacher_head()(self.blocks[str(t)](h))
            return student, teacher
        x = self.blocks[str(t)](self.prefix(x))
        return self.head(x) if self.head is not None else self.out[str(t)](x)

    def trainable_keys(self) -> list[str]:
        """State keys this step updates: everything outside the frozen modules."""
        frozen = {id(m) for m in self.frozen_modules()}
        skip = tuple(f"{name}." for name, m in self.named_modules() if id(m) in frozen)
        return [k for k in self.state_dict() if not k.startswith(skip)]

    @classmethod
    def of(cls, key: ModelKey, step: Step) -> StepModel:
        """The step's sub-model for a model key (shapes, output depth, stage-1 prefix)."""
        return cls(key.spec(), step, key.out_depth, key.stage1_prefix)


def distill_loss(out: tuple[torch.Tensor, torch.Tensor], _labels: torch.Tensor) -> torch.Tensor:
    """Condensing loss: mean squared error between student and teacher logits."""
    student, teacher = out
    return F.mse_loss(student, teacher)


def step_loss(step: Step) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """The loss a step trains with: distillation for condensing, else cross-entropy."""
    return distill_loss if step.stage == STAGE_CONDENSE else F.cross_entropy


class GlobalModel(nn.Module):
    """Every module any step may need: the whole progressive state."""

    def __init__(self, spec: BlockNetSpec, out_depth: int = 0) -> None:
        super().__init__()
        last = spec.num_blocks - 1
        self.blocks = nn.ModuleList(spec.make_block(t) for t in range(spec.num_blocks))
        self.head = spec.make_head()
        self.front = nn.ModuleDict({str(t): Front(spec, t) for t in range(1, last + 1)})
        self.out = nn.ModuleDict({str(t): OutputModule(spec, t, out_depth) for t in range(last)})

    def output_module(self, t: int) -> OutputModule:
        """``out.{t}``, as its type (indexing a ``ModuleDict`` gives a plain ``nn.Module``)."""
        return cast(OutputModule, self.out[str(t)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def model_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of the deliverable model: the real blocks and the head."""
    return [k for k in state if k.startswith(("blocks.", "head."))]
