"""Atomic checkpoints of the whole progressive state, refused when they do not fit the run.

Flower has no resume: a ServerApp that dies loses the run. ProFL's state is more
than the weights (stage, block, effective-movement window, round counters,
sampling RNG, results so far), so all of it is saved after a round, written to a
temporary file and renamed into place, so a crash mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "profl-checkpoint-v1"
# Keys that may change between the interrupted run and its resumption (the batch layout
# changes rounding only, like resuming on another CPU).
RESUMABLE_KEYS = (
    "num_rounds",
    "output",
    "resume",
    "checkpoint",
    "train.timeout",
    "train.channels_last",
)


class CheckpointError(ValueError):
    """A checkpoint is unreadable, or belongs to a different configuration."""


def fingerprint(config: dict[str, Any]) -> str:
    """Hash of everything that must match for a resumed run to continue the same run."""
    cfg = json.loads(json.dumps(config, sort_keys=True, default=str))
    for key in RESUMABLE_KEYS:
        node, *rest = key.split(".")
        if rest and isinstance(cfg.get(node), dict):
            cfg[node].pop(rest[0], None)
        else:
            cfg.pop(node, None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def save(path: Path, state: dict[str, Any], config_hash: str) -> None:
    """Write ``state`` atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "config_hash": config_hash, "state": state}, tmp)
    os.replace(tmp, path)


def load(path: Path, config_hash: str) -> dict[str, Any]:
    """Read a checkpoint; refuse one that is corrupt or from another configuration."""
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(
            f"resume: no checkpoint at '{path}'; pass a run folder or checkpoint.pt"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
        raise CheckpointError(
            f"resume: checkpoint '{path}' is corrupt or truncated ({err})"
        ) from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state" not in blob:
        raise CheckpointError(f"resume: '{path}' is not a ProFL checkpoint ({FORMAT})")
    if blob["config_hash"] != config_hash:
        raise CheckpointError(
            f"resume: checkpoint '{path}' was written by a run with another configuration; "
            f"only {', '.join(RESUMABLE_KEYS)} may change when resuming"
        )
    return blob["state"]
