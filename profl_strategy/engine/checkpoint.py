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
import pickle
import types
from pathlib import Path
from typing import Any

import torch

FORMAT = "profl-checkpoint-v1"
# Checkpoints since the engine/methods layout (issue 38) say so; one without it was
# written before, when every module sat directly under profl_strategy/.
LAYOUT = 2
# Modules whose classes a checkpoint pickles and that moved with that layout: a ProFL
# checkpoint holds the step it started (a Step). Unpickled from their new home.
MOVED_MODULES = {"profl_strategy.step_model": "profl_strategy.engine.step"}
# Class paths in the config (method.strategy, memory._target_) are hashed as they were
# spelled before that layout, so the same run has the same hash on either side of it.
OLD_PREFIXES = (
    ("profl_strategy.methods.profl.", "profl_strategy."),
    ("profl_strategy.methods.baselines.", "profl_strategy.baselines."),
    ("profl_strategy.engine.", "profl_strategy."),
)
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


class _Unpickler(pickle.Unpickler):
    """Reads classes of :data:`MOVED_MODULES` from where they live now."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


_PICKLE = types.SimpleNamespace(__name__="pickle", Unpickler=_Unpickler, load=pickle.load)


def _old_spelling(value: Any) -> Any:
    """``value`` with class paths spelled as before the layout (:data:`OLD_PREFIXES`)."""
    if isinstance(value, dict):
        return {k: _old_spelling(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_old_spelling(v) for v in value]
    if isinstance(value, str):
        for new, old in OLD_PREFIXES:
            if value.startswith(new):
                return old + value[len(new) :]
    return value


def fingerprint(config: dict[str, Any]) -> str:
    """Hash of everything that must match for a resumed run to continue the same run."""
    cfg = _old_spelling(json.loads(json.dumps(config, sort_keys=True, default=str)))
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
    blob = {"format": FORMAT, "layout": LAYOUT, "config_hash": config_hash, "state": state}
    torch.save(blob, tmp)
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
        blob = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means corrupt
        raise CheckpointError(
            f"resume: checkpoint '{path}' is corrupt or truncated ({err})"
        ) from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state" not in blob:
        raise CheckpointError(f"resume: '{path}' is not a ProFL checkpoint ({FORMAT})")
    if blob["config_hash"] != config_hash:
        before = (
            ""
            if blob.get("layout") == LAYOUT
            else "; it predates the engine/methods layout (issue 38), after which a "
            "baseline's method config no longer carries ProFL's keys: resume it with the "
            "code that wrote it (commit 1f474ec or earlier), or start the run again"
        )
        raise CheckpointError(
            f"resume: checkpoint '{path}' was written by a run with another configuration; "
            f"only {', '.join(RESUMABLE_KEYS)} may change when resuming{before}"
        )
    return blob["state"]
