"""What travels between the strategy and the ClientApp, in one place.

The ClientApp reads everything run-specific from the message, never from
``context.run_config``: the same client code then works in simulation, in
deployment and in tests, and a node can check a step against its own budget
with the very memory model the server used.
"""

from __future__ import annotations

from dataclasses import asdict

from flwr.app import ConfigRecord

from profl_strategy.budgets import MemoryProfile
from profl_strategy.memory import ModelKey
from profl_strategy.step_model import Step

QUERY_BUDGET = "query.budget"
TRAIN_STEP = "train.step"
MEM_PREFIX = "mem."


def run_record(
    *,
    model: ModelKey,
    profile: MemoryProfile,
    full_peak_mb: float,
    seed: int,
    data: dict[str, str | int | float],
    train: dict[str, int | float],
) -> ConfigRecord:
    """The part of every message that stays fixed for the whole run."""
    rec = ConfigRecord(
        {
            "model": model.name,
            "width": float(model.width),
            "out-depth": model.out_depth,
            "num-classes": model.num_classes,
            "input-shape": list(model.input_shape),
            "full-peak-mb": float(full_peak_mb),
            "seed": seed,
            **data,
            **train,
        }
    )
    for k, v in asdict(profile).items():
        rec[MEM_PREFIX + k] = list(v) if isinstance(v, tuple) else v
    return rec


def step_record(base: ConfigRecord, step: Step, server_round: int, need_mb: float) -> ConfigRecord:
    """The run record plus which step to train in this round."""
    rec = ConfigRecord(dict(base))
    rec.update(
        {"stage": step.stage, "block": step.block, "server-round": server_round, "need-mb": need_mb}
    )
    return rec


def model_key_of(rec: ConfigRecord) -> ModelKey:
    """Rebuild the model's shape key from a message."""
    c, h, w = (int(v) for v in rec["input-shape"])
    return ModelKey(
        str(rec["model"]),
        int(rec["num-classes"]),
        (c, h, w),
        float(rec["width"]),
        int(rec["out-depth"]),
    )


def step_of(rec: ConfigRecord) -> Step:
    """The step a train message asks for."""
    return Step(int(rec["stage"]), int(rec["block"]))


def profile_of(rec: ConfigRecord) -> MemoryProfile:
    """The memory profile sent with a message."""
    fields = {k[len(MEM_PREFIX) :]: v for k, v in rec.items() if k.startswith(MEM_PREFIX)}
    return MemoryProfile(**fields)
