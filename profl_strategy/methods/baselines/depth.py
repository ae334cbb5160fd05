"""Depth-scaled sub-models: the first ``k`` blocks plus classifier heads.

DepthFL and InclusiveFL give a node of depth ``k`` the first ``k`` blocks of
the global model. A classifier *after block i-1* is "head ``i``": for the last
block (``i = K``) it is the model's own head; for ``i < K`` it is DepthFL's
bottleneck classifier: one depthwise-separable conv (``SepConv``) per later
change of feature shape, down to the last block's features, then the model's
own kind of head. Token models (ViT) keep one shape, so their shallow heads are
the model's head itself.

Global keys: ``blocks.{j}``, ``head`` (the deepest classifier), ``aux.{i}``
(head ``i < K``) and, for InclusiveFL, ``tops.{k}`` (the group-local top block
of depth-``k`` models). A sub-model is keyed ``blocks.{j}`` / ``heads.{i}``;
:func:`key_map` translates between the two.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from profl_strategy.memory.model import estimate_training
from profl_strategy.methods.profl.step_model import block_shapes
from profl_strategy.models.base import BlockNetSpec
from profl_strategy.task.model_key import ModelKey


class SepConv(nn.Sequential):
    """DepthFL's bottleneck layer: two depthwise-separable 3x3 convs, BN and ReLU.

    The first depthwise conv has the stride, so the costly maps are at the
    lower resolution.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


class BottleneckClassifier(nn.Module):
    """A shallow classifier after block ``i - 1``: SepConvs to the last block's shape, head."""

    def __init__(self, spec: BlockNetSpec, i: int) -> None:
        super().__init__()
        shapes = block_shapes(spec)
        layers: list[nn.Module] = []
        if len(shapes[i]) == 3:
            for j in range(i, spec.num_blocks):
                a, b = shapes[j], shapes[j + 1]
                if a != b:
                    layers.append(SepConv(a[0], b[0], max(1, a[1] // b[1])))
        self.body = nn.Sequential(*layers)
        self.head = spec.make_head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_classifier(spec: BlockNetSpec, i: int) -> nn.Module:
    """Head ``i`` (after block ``i - 1``): the model's head for ``i = K``."""
    if not 1 <= i <= spec.num_blocks:
        raise ValueError(f"head {i} is out of range 1..{spec.num_blocks}")
    return spec.make_head() if i == spec.num_blocks else BottleneckClassifier(spec, i)


class DepthSubModel(nn.Module):
    """Blocks ``0 .. depth-1`` and the classifier heads ``heads`` (each ``<= depth``).

    ``forward`` returns one logit tensor per head, shallowest first.
    """

    def __init__(self, spec: BlockNetSpec, depth: int, heads: Sequence[int]) -> None:
        super().__init__()
        if not 1 <= depth <= spec.num_blocks:
            raise ValueError(f"depth {depth} is out of range 1..{spec.num_blocks}")
        heads = sorted(set(heads))
        if not heads or heads[0] < 1 or heads[-1] > depth:
            raise ValueError(f"heads {heads} must lie in 1..{depth}")
        self.depth = depth
        self.blocks = nn.ModuleList(spec.make_block(j) for j in range(depth))
        self.heads = nn.ModuleDict({str(i): make_classifier(spec, i) for i in heads})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for j, block in enumerate(self.blocks):
            x = block(x)
            if str(j + 1) in self.heads:
                outputs.append(self.heads[str(j + 1)](x))
        return outputs


class _SummedHeads(nn.Module):
    """All heads in one graph, so the memory estimate counts every head's activations."""

    def __init__(self, model: DepthSubModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.model(x)).sum(0)


def heads_for(depth: int, all_heads: bool) -> tuple[int, ...]:
    """DepthFL trains every head up to ``depth``; InclusiveFL only its top one."""
    return tuple(range(1, depth + 1)) if all_heads else (depth,)


@lru_cache(maxsize=256)
def depth_need_mb(key: ModelKey, depth: int, heads: tuple[int, ...], batch_size: int) -> float:
    """Estimated peak MB of training a depth sub-model: ProFL's memory model."""
    with torch.random.fork_rng():  # estimating must not move the caller's RNG stream
        torch.manual_seed(0)
        model = _SummedHeads(DepthSubModel(key.spec(), depth, heads))
        est = estimate_training(model, key.input_shape, batch_size, key.num_classes)
    return est.total_mb


class DepthNet(nn.Module):
    """The server's state for depth methods: blocks, the deepest head, shallow heads.

    With ``group_tops`` it also holds InclusiveFL's group-local top blocks:
    ``tops.{k}`` starts as a copy of block ``k - 1`` and is trained only by
    depth-``k`` nodes.
    """

    def __init__(self, spec: BlockNetSpec, group_tops: bool = False) -> None:
        super().__init__()
        last = spec.num_blocks
        self.blocks = nn.ModuleList(spec.make_block(j) for j in range(last))
        self.head = spec.make_head()
        self.aux = nn.ModuleDict({str(i): make_classifier(spec, i) for i in range(1, last)})
        self.tops = nn.ModuleDict(
            {str(k): copy.deepcopy(self.blocks[k - 1]) for k in range(1, last)}
            if group_tops
            else {}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def key_map(
    sub_keys: Sequence[str], depth: int, num_blocks: int, group_tops: bool
) -> dict[str, str]:
    """Sub-model key -> global key for a depth-``depth`` node."""
    out = {}
    for k in sub_keys:
        kind, idx, rest = k.split(".", 2)
        i = int(idx)
        if kind == "heads":
            out[k] = f"head.{rest}" if i == num_blocks else f"aux.{i}.{rest}"
        elif group_tops and i == depth - 1 and depth < num_blocks:
            out[k] = f"tops.{depth}.{rest}"
        else:
            out[k] = k
    return out


class DepthClassifier(nn.Module):
    """The depth-``depth`` model for evaluation: its deepest head, or the mean of all.

    ``depth`` is the deepest tier any node trains (the global model does not
    exist beyond it); InclusiveFL's depth-``k`` model uses its group's top block.
    """

    def __init__(
        self,
        spec: BlockNetSpec,
        state: dict[str, torch.Tensor],
        depth: int,
        *,
        ensemble: bool = False,
        group_tops: bool = False,
    ) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.net = DepthSubModel(spec, depth, range(1, depth + 1) if ensemble else (depth,))
        sub = self.net.state_dict()
        mapping = key_map(list(sub), depth, spec.num_blocks, group_tops)
        self.net.load_state_dict({k: state[mapping[k]] for k in sub})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.net(x)
        return torch.stack(outputs).mean(0) if self.ensemble else outputs[-1]


def kl_to(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)), batch mean; the teacher is detached."""
    target = F.softmax(teacher.detach(), dim=1)
    return F.kl_div(F.log_softmax(student, dim=1), target, reduction="batchmean")


def depth_loss(outputs: Sequence[torch.Tensor], y: torch.Tensor, kd_weight: float) -> torch.Tensor:
    """Cross-entropy of every head, plus DepthFL's mutual self-distillation.

    Each head also learns the others' (detached) predictions, weighted by
    ``kd_weight / (n - 1)``, as in DepthFL; ``kd_weight = 0`` gives plain deep
    supervision, and a single head (InclusiveFL) is ordinary cross-entropy.
    """
    n = len(outputs)
    loss = sum(F.cross_entropy(o, y) for o in outputs)
    if kd_weight > 0 and n > 1:
        kd = sum(kl_to(outputs[i], outputs[j]) for i in range(n) for j in range(n) if i != j)
        loss = loss + kd_weight * kd / (n - 1)  # type: ignore[assignment]
    return loss  # type: ignore[return-value]


def kd_ramp(server_round: int, rampup_rounds: float) -> float:
    """DepthFL's consistency weight ``exp(-5 (1 - min(r, R)/R)^2)`` (sigmoid ramp-up)."""
    if rampup_rounds <= 0:
        return 1.0
    phase = 1.0 - min(max(server_round - 1, 0), rampup_rounds) / rampup_rounds
    return float(torch.exp(torch.tensor(-5.0 * phase * phase)))
