"""Messages of the baselines: one train action per family, the run record as base.

Every message carries the strategy's run record (dataset, partitioner, lr, ...
see :func:`profl_strategy.protocol.run_record`) plus what the node's sub-model
is, so the ClientApp rebuilds exactly the model the server sliced, and checks
it against its own budget with the same memory model.
"""

from __future__ import annotations

from flwr.app import ConfigRecord

from profl_strategy.protocol import step_record
from profl_strategy.step_model import Step

TRAIN_WIDTH = "train.width"  # AllSmall, HeteroFL, FedRolex: a width-scaled whole model
TRAIN_DEPTH = "train.depth"  # DepthFL, InclusiveFL: the first k blocks and heads
QUERY_BN_STATS = "query.bnstats"  # HeteroFL, FedRolex: BN statistics of the global model


def width_record(
    base: ConfigRecord,
    step: Step,
    server_round: int,
    need_mb: float,
    *,
    ratio: float,
    label_mask: bool,
) -> ConfigRecord:
    """Train the model at ``ratio`` times the run's width."""
    rec = step_record(base, step, server_round, need_mb)
    rec.update({"width-ratio": float(ratio), "label-mask": bool(label_mask)})
    return rec


def depth_record(
    base: ConfigRecord,
    step: Step,
    server_round: int,
    need_mb: float,
    *,
    depth: int,
    heads: tuple[int, ...],
    kd_weight: float,
) -> ConfigRecord:
    """Train blocks ``0 .. depth-1`` with classifier heads ``heads``."""
    rec = step_record(base, step, server_round, need_mb)
    rec.update({"depth": int(depth), "heads": [int(h) for h in heads], "kd-weight": kd_weight})
    return rec
