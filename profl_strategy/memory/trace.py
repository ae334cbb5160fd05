"""Bytes of tensors alive during a training call, traced op by op.

A sum of per-kind maxima (every saved activation + every gradient + the
optimiser state + backward's temporaries + the reply) over-counts: the kinds
peak at different moments. Activations peak at the end of the forward pass,
gradients at the end of backward, and the reply is made after training.
Tracing what the training code itself allocates, after every ATen op, gives
the peak of tensor memory as it happens: :class:`LiveBytes` counts every
storage an op creates until Python drops it.

A probe runs the call on tiny batches. Each op's live bytes are affine in the
batch size (every tensor is per-sample or per-weight, and the op sequence does
not depend on the batch), so three probe sizes give the peak at any batch
exactly (:func:`extrapolated_peak`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Live bytes of the storages created under this mode, recorded after every op.

    Storages of ``exclude`` (the model's weights, the input batches) are never
    counted, even when an in-place op returns them.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.skip = {t.untyped_storage().data_ptr() for t in exclude}
        self.refs: dict[int, weakref.ref] = {}
        self.live = 0
        self.trace: list[int] = []

    def _gone(self, ptr: int, nbytes: int) -> None:
        self.live -= nbytes
        self.refs.pop(ptr, None)

    def _add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or ptr in self.skip or ptr in self.refs:
            return
        self.live += nbytes
        # A storage's Python object lives exactly as long as the storage itself.
        self.refs[ptr] = weakref.ref(storage, lambda _r, p=ptr, n=nbytes: self._gone(p, n))  # type: ignore[misc]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        self.trace.append(self.live)
        return out


def live_trace(call: Callable[[], object], exclude: Iterable[torch.Tensor]) -> list[int]:
    """Live bytes after every op of ``call``; the last entry is what outlives it."""
    mode = LiveBytes(exclude)
    with mode:
        call()
    return [*mode.trace, mode.live]


def extrapolated_peak(
    traces: Sequence[Sequence[int]], sizes: Sequence[int], target: int
) -> tuple[int, int] | None:
    """Peak and final live bytes at batch ``target`` from traces at three batch ``sizes``.

    None when the traces do not line up (different op sequences) or an op's
    live bytes are not affine in the batch size: then trace at ``target`` itself.
    """
    a, b, c = traces
    if not len(a) == len(b) == len(c):
        return None
    d0, d1 = sizes[1] - sizes[0], sizes[2] - sizes[1]
    at = []
    for va, vb, vc in zip(a, b, c, strict=True):
        if (vb - va) * d1 != (vc - vb) * d0:
            return None
        at.append(va + (vb - va) * (target - sizes[0]) // d0)
    return max(at), at[-1]
