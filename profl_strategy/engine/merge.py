"""The one merge of every method: each global entry becomes the weighted mean of the replies
that trained it.

ProFL's blocks, FedAvg's whole model, HeteroFL/FedRolex channel windows and
DepthFL/InclusiveFL depth prefixes are all the same operation once a reply says
where its arrays sit in the global model (:class:`Update`). Policy:

- an entry is averaged over the replies covering it, weighted by their example
  counts; entries no reply covered keep their global value, keys no reply
  covered are not returned;
- floating-point entries are summed in their own dtype with normalised weights,
  in reply order, exactly as flwr's ``aggregate_arrayrecords`` does, so a merge
  of whole tensors equals it bit for bit;
- integer buffers (BatchNorm's ``num_batches_tracked``) are averaged in float64
  and rounded to the nearest integer (half to even), never truncated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Index = tuple[np.ndarray | None, ...]  # per dimension: the global indices, or None (all)


@dataclass
class Update:
    """One reply's arrays, its weight, and where each array sits in the global state.

    ``where`` maps a reply key to ``(global key, index)``; a key not in it is the
    same global key, whole. ``rows`` (HeteroFL's masked classifier) restricts a
    reply key to some rows of its first dimension: only those count.
    """

    arrays: Mapping[str, np.ndarray]
    weight: float
    where: Mapping[str, tuple[str, Index]] | None = None
    rows: Mapping[str, np.ndarray] | None = None

    def placed(self, shapes: Mapping[str, tuple[int, ...]]):  # noqa: ANN201 - generator
        """``(global key, numpy index, value)`` for every array of this reply."""
        for key, value in self.arrays.items():
            target, idx = (self.where or {}).get(key, (key, ()))
            shape = shapes[target]
            idx = tuple(idx) + (None,) * (len(shape) - len(idx))
            value = np.asarray(value)
            if self.rows is not None and key in self.rows:
                rows = self.rows[key]
                dim0 = np.arange(shape[0]) if idx[0] is None else np.asarray(idx[0])
                idx, value = (dim0[rows], *idx[1:]), value[rows]
            yield target, _ix(idx, shape), value


def _ix(idx: Index, shape: tuple[int, ...]) -> tuple:
    """A numpy index for a window (a window never repeats an index: plain += is exact)."""
    if not shape:
        return ()
    if all(i is None for i in idx):
        return (slice(None),) * len(shape)
    full = [np.arange(n) if i is None else np.asarray(i) for i, n in zip(idx, shape, strict=True)]
    return np.ix_(*full)


def merge_updates(
    global_state: Mapping[str, np.ndarray], updates: Sequence[Update]
) -> dict[str, np.ndarray]:
    """Weighted per-entry mean of ``updates`` (in their order) for every key they cover."""
    state = {k: np.asarray(v) for k, v in global_state.items()}
    shapes = {k: v.shape for k, v in state.items()}
    weight: dict[str, np.ndarray] = {}
    for up in updates:
        for key, ix, _ in up.placed(shapes):
            weight.setdefault(key, np.zeros(shapes[key], dtype=np.float64))[ix] += up.weight
    acc: dict[str, np.ndarray] = {}
    for up in updates:
        for key, ix, value in up.placed(shapes):
            integer = state[key].dtype.kind in "iu"
            kind = np.float64 if integer else state[key].dtype
            if key not in acc:
                acc[key] = np.zeros(shapes[key], dtype=kind)
            factor = (up.weight / weight[key][ix]).astype(kind)
            acc[key][ix] += np.asarray(value, dtype=kind) * factor
    out = {}
    for key, total in acc.items():
        old, covered = state[key], weight[key] > 0
        merged = np.where(covered, total, old)
        merged = np.rint(merged) if old.dtype.kind in "iu" else merged
        out[key] = np.asarray(merged, dtype=old.dtype)  # ufuncs turn 0-d arrays into scalars
    return out
