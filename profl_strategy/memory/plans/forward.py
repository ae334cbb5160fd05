"""Running a step model the way a :class:`~profl_strategy.memory.plans.plan.Plan` does.

Checkpointed segments of the active block (BatchNorm statistics updated once,
not again by the recomputation) and the split of a step model into what trains
and what is frozen; :mod:`profl_strategy.memory.plans.train` drives it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from profl_strategy.memory.plans.plan import Plan
from profl_strategy.methods.profl.step_model import StepModel

_LOCAL = threading.local()


def in_recompute() -> bool:
    """True while checkpointing recomputes a segment during backward."""
    return getattr(_LOCAL, "recompute_depth", 0) > 0


@contextmanager
def _recomputing(segment: nn.Module) -> Iterator[None]:
    """Context of a segment's recomputation: no second BatchNorm statistics update.

    The recomputation must run exactly the ops of the original forward (the
    checkpoint matches saved tensors by position), so BatchNorm layers update
    their running statistics again; their buffers are restored afterwards.
    """
    bns = [m for m in segment.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    before = [[b.clone() for b in bn.buffers()] for bn in bns]
    _LOCAL.recompute_depth = getattr(_LOCAL, "recompute_depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.recompute_depth -= 1
        with torch.no_grad():
            for bn, saved in zip(bns, before, strict=True):
                for b, s in zip(bn.buffers(), saved, strict=True):
                    b.copy_(s)


def _checkpoint_contexts(
    segment: nn.Module,
) -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    return nullcontext(), _recomputing(segment)


def _starts_segment(child: nn.Module) -> bool:
    weighted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention)
    return any(isinstance(m, weighted) for m in child.modules())


def block_segments(block: nn.Module) -> list[nn.Module]:
    """Checkpoint segments of a block: its children, grouped behind each weighted layer.

    Only an :class:`torch.nn.Sequential` block can be cut (its forward is its
    children in order); any other block is a single segment. A new segment
    starts at each child that holds a convolution, linear layer or attention,
    so a BatchNorm and an in-place ReLU stay with the convolution before them:
    an in-place op must never modify a checkpointed segment's saved input.
    """
    if not isinstance(block, nn.Sequential) or len(block) < 2:
        return [block]
    groups: list[list[nn.Module]] = []
    for child in block:
        if not groups or _starts_segment(child):
            groups.append([child])
        else:
            groups[-1].append(child)
    return [g[0] if len(g) == 1 else nn.Sequential(*g) for g in groups]


def trainable_part(model: StepModel) -> nn.ModuleList:
    """Every module of ``model`` outside the frozen prefix (block, front, output, head)."""
    frozen = set(model.frozen_modules())
    parts = [b for b in model.blocks.values() if b not in frozen]
    parts += [*model.front.values(), *model.out.values()]
    if model.head is not None:
        parts.append(model.head)
    return nn.ModuleList(parts)


class PlanForward(nn.Module):
    """``model``'s forward as ``plan`` runs it.

    With ``offload_prefix`` the input is the frozen prefix's output (the active
    block's input), not the image. With ``checkpoint`` the active block runs as
    checkpointed segments; ``checkpointed=False`` runs the same segments plainly
    (used to measure what each segment saves).
    """

    def __init__(self, model: StepModel, plan: Plan, checkpointed: bool = True) -> None:
        super().__init__()
        self.model = model
        self.skip_prefix = plan.offload_prefix
        block = model.blocks[str(model.step.block)]
        self.segments = block_segments(block) if plan.checkpoint else [block]
        self.checkpointed = plan.checkpoint and checkpointed

    def run_block(self, x: torch.Tensor) -> torch.Tensor:
        """The active block, segment by segment."""
        for seg in self.segments:
            if self.checkpointed:
                ctx: Callable = partial(_checkpoint_contexts, seg)
                x = checkpoint(seg, x, use_reentrant=False, context_fn=ctx)
            else:
                x = seg(x)
        return x

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """Output module (or the head, for the last block)."""
        m = self.model
        return m.head(x) if m.head is not None else m.out[str(m.step.block)](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip_prefix:
            x = self.model.prefix(x)
        return self.output(self.run_block(x))
