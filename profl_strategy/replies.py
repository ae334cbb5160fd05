"""Checking train replies and merging them into the global model.

A reply reaches the global model only if it is exactly what was asked for: the
step's trainable keys, the right shapes, finite values and a positive example
count. Everything else is rejected with a reason the strategy logs with the
node id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from flwr.app import Message, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

REFUSED = "refused"


def reply_problem(
    reply: Message, expected_keys: Iterable[str], reference: Mapping[str, torch.Tensor]
) -> str | None:
    """Why a train reply cannot be aggregated (``REFUSED`` for a budget refusal), or None."""
    if reply.has_error():
        return f"error reply: {reply.error.reason}"
    content = reply.content
    metrics = content.metric_records.get("metrics")
    if metrics is None:
        return "no metrics"
    if int(metrics.get("refused", 0)):
        return REFUSED
    if "arrays" not in content.array_records:
        return "no arrays"
    arrays = content["arrays"]
    if sorted(arrays.keys()) != sorted(expected_keys):
        extra = sorted(set(arrays.keys()) - set(expected_keys))
        missing = sorted(set(expected_keys) - set(arrays.keys()))
        return (
            "arrays for other keys than the step's trainable ones "
            f"(unexpected: {extra[:3]}, missing: {missing[:3]})"
        )
    for key, array in arrays.items():
        value = array.numpy()
        if tuple(value.shape) != tuple(reference[key].shape):
            return f"shape of {key} is {value.shape}, expected {tuple(reference[key].shape)}"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"non-finite values in {key}"
    examples = metrics.get("num-examples", 0)
    if not isinstance(examples, int | float) or not examples > 0:
        return "num-examples is not positive"
    return None


def merge_weighted(
    contents: list[RecordDict], reference: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """FedAvg of the replies' arrays, weighted by examples, in the reference dtypes.

    ``aggregate_arrayrecords`` averages in float64; integer buffers such as
    BatchNorm's ``num_batches_tracked`` are cast back so the global model keeps
    its dtypes.
    """
    agg = aggregate_arrayrecords(contents, "num-examples")
    return {
        k: torch.from_numpy(np.asarray(a.numpy())).to(reference[k].dtype) for k, a in agg.items()
    }


def weighted_mean(contents: list[RecordDict], metric: str) -> float:
    """Example-weighted mean of one reply metric (e.g. the training loss)."""
    pairs = [(float(c["metrics"][metric]), float(c["metrics"]["num-examples"])) for c in contents]
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
