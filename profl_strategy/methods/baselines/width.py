"""Width-scaled sub-models: channel index windows, slicing, and per-slice aggregation.

HeteroFL gives a node of model rate ``r`` the first ``r`` share of every
layer's channels (nested windows); FedRolex moves that window by one channel
per round and wraps around, so every channel of the server model is trained
over time. Both cut the sub-model's state dict out of the global one with the
same index sets, and both aggregate each parameter *entry* over the nodes whose
window covered it; entries nobody covered keep their global value.

Which dimension of a tensor is a channel dimension is read off the shapes: a
width-``r`` model built by the same spec differs from the global one exactly
in its channel dimensions. A channel space's window depends only on its full
size, its sub size and the round, so a layer's output window and the next
layer's input window (and both ends of a residual connection) always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from profl_strategy.models import build_full_model
from profl_strategy.models.vit import ViTSpec
from profl_strategy.task.model_key import ModelKey

# HeteroFL's model rates a..e (FedRolex uses the same five tiers).
DEFAULT_RATIOS: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125, 0.0625)

Index = np.ndarray | None  # None: the whole dimension
SlicePlan = dict[str, tuple[Index, ...]]  # key -> one index per dimension
GroupsFn = Callable[[str, int], int]


def channel_index(full: int, sub: int, offset: int = 0, groups: int = 1) -> np.ndarray:
    """Indices of the ``sub`` channels a sub-model takes out of ``full``.

    The dimension is split into ``groups`` equal parts (e.g. the q, k and v
    heads of an attention projection), and each part contributes the same
    window: ``(offset + 0 .. offset + sub/groups - 1) mod full/groups``.
    ``offset = 0`` gives HeteroFL's nested window, a growing offset
    FedRolex's rolling one.

    Raises
    ------
    ValueError
        If the sizes cannot be split into ``groups`` parts, or ``sub > full``.
    """
    if full % groups or sub % groups:
        raise ValueError(f"sizes {full} and {sub} do not split into {groups} groups")
    part_full, part_sub = full // groups, sub // groups
    if not 0 < part_sub <= part_full:
        raise ValueError(f"a window of {sub} channels does not fit in {full}")
    window = (offset + np.arange(part_sub)) % part_full
    return np.concatenate([g * part_full + window for g in range(groups)])


def vit_groups(num_heads: int) -> GroupsFn:
    """Per-head windows for attention projections, so sub-heads are slices of heads.

    ``in_proj`` stacks q, k, v (``3 * num_heads`` groups along dim 0);
    ``out_proj`` takes the concatenated heads along dim 1.
    """

    def groups(key: str, dim: int) -> int:
        if key.endswith(("in_proj_weight", "in_proj_bias")) and dim == 0:
            return 3 * num_heads
        if key.endswith("out_proj.weight") and dim == 1:
            return num_heads
        return 1

    return groups


def no_groups(key: str, dim: int) -> int:  # noqa: ARG001 - GroupsFn signature
    """Every dimension is one channel space (convolutional nets)."""
    return 1


def groups_for(key: ModelKey) -> GroupsFn:
    """The grouping rule of an architecture."""
    spec = key.spec()
    return vit_groups(spec.num_heads) if isinstance(spec, ViTSpec) else no_groups


def make_plan(
    full_shapes: Mapping[str, Sequence[int]],
    sub_shapes: Mapping[str, Sequence[int]],
    offset: int = 0,
    groups: GroupsFn = no_groups,
) -> SlicePlan:
    """Index sets that cut each sub-model tensor out of the global one.

    Raises
    ------
    ValueError
        If the sub-model has a key the global model lacks, or a tensor of
        another rank.
    """
    plan: SlicePlan = {}
    for key, sub in sub_shapes.items():
        if key not in full_shapes:
            raise ValueError(f"sub-model key {key!r} is not in the global model")
        full = tuple(full_shapes[key])
        if len(full) != len(sub):
            raise ValueError(f"{key}: rank {len(sub)} vs {len(full)} in the global model")
        plan[key] = tuple(
            None if f == s else channel_index(f, s, offset, groups(key, d))
            for d, (f, s) in enumerate(zip(full, sub, strict=True))
        )
    return plan


def _ix(index: tuple[Index, ...], shape: Sequence[int]) -> tuple:
    """Open-mesh index (``np.ix_``) with ``None`` meaning the whole dimension."""
    if not index:
        return ()
    return np.ix_(*(np.arange(n) if i is None else i for i, n in zip(index, shape, strict=True)))


def slice_state(state: Mapping[str, np.ndarray], plan: SlicePlan) -> dict[str, np.ndarray]:
    """The sub-model's state: each planned tensor cut out of ``state``."""
    # np.array, not np.ascontiguousarray: that one turns 0-d tensors into shape (1,).
    return {
        k: np.array(np.asarray(state[k])[_ix(idx, np.shape(state[k]))], order="C")
        for k, idx in plan.items()
    }


def unslice_into(
    target: dict[str, np.ndarray], sub_state: Mapping[str, np.ndarray], plan: SlicePlan
) -> None:
    """Write a sub-model's tensors back into their places in ``target`` (in place)."""
    for k, idx in plan.items():
        target[k][_ix(idx, target[k].shape)] = sub_state[k]


@dataclass
class SliceUpdate:
    """One node's reply for per-slice aggregation.

    ``rows`` optionally restricts keys to some entries of dimension 0 *of the
    sub tensor* (HeteroFL's label mask: classifier rows of labels the node
    does not hold are not its to update).
    """

    state: Mapping[str, np.ndarray]
    plan: SlicePlan
    weight: float
    rows: Mapping[str, np.ndarray] | None = None


def aggregate_slices(
    global_state: Mapping[str, np.ndarray], updates: Sequence[SliceUpdate]
) -> dict[str, np.ndarray]:
    """HeteroFL aggregation: each entry is the weighted mean over the nodes covering it.

    Entries no node covered keep their global value. Integer tensors (BatchNorm's
    ``num_batches_tracked``) are averaged in float and rounded back.
    """
    acc = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in global_state.items()}
    weight = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in global_state.items()}
    for up in updates:
        for k, idx in up.plan.items():
            value = np.asarray(up.state[k], dtype=np.float64)
            shape = np.shape(global_state[k])
            if up.rows is not None and k in up.rows:
                rows = up.rows[k]
                dim0 = np.arange(shape[0]) if idx[0] is None else idx[0]
                idx = (dim0[rows], *idx[1:])
                value = value[rows]
            ix = _ix(idx, shape)  # a window never repeats an index: plain += is exact
            acc[k][ix] += up.weight * value
            weight[k][ix] += up.weight
    out: dict[str, np.ndarray] = {}
    for k, old in global_state.items():
        old = np.asarray(old)
        covered = weight[k] > 0
        merged = np.where(covered, acc[k] / np.where(covered, weight[k], 1.0), old)
        merged = np.rint(merged) if old.dtype.kind in "iu" else merged
        out[k] = np.asarray(merged, dtype=old.dtype)  # ufuncs turn 0-d arrays into scalars
    return out


def width_model(key: ModelKey, ratio: float) -> nn.Module:
    """The whole model at ``ratio`` times the run's width (same spec, same keys)."""
    return build_full_model(sub_key(key, ratio).spec())


def sub_key(key: ModelKey, ratio: float) -> ModelKey:
    """The shape key of the width-``ratio`` model."""
    return ModelKey(key.name, key.num_classes, key.input_shape, key.width * ratio, key.out_depth)


def shapes_of(state: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Shapes of a state dict's tensors."""
    return {k: tuple(v.shape) for k, v in state.items()}


def classifier_keys(model: nn.Module) -> list[str]:
    """Keys of the last linear layer (the classifier whose rows are labels)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return []
    return [f"{last}.{p}" for p, _ in model.get_submodule(last).named_parameters()]


class LabelMasked(nn.Module):
    """HeteroFL's masked classifier: logits of labels absent locally are set to 0.

    A node then never pushes the rows of labels it has not seen; the server
    aggregates those rows only over nodes that hold the label.
    """

    def __init__(self, model: nn.Module, present: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.model = model
        mask = torch.zeros(num_classes, dtype=torch.bool)
        mask[torch.as_tensor(list(present), dtype=torch.long)] = True
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).masked_fill(~self.mask, 0.0)  # type: ignore[operator]
