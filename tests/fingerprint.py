"""Behaviour fingerprint of every method: a short in-process run each, final accuracy and log.

Not a test (pytest does not collect it): run it before and after a change that must not
change behaviour, and compare the two files::

    python -m tests.fingerprint ../shared/data before.json     # on the old commit
    python -m tests.fingerprint ../shared/data after.json      # on the new one

Each method trains 4 rounds (ProFL variants 12) of the ``laptop`` preset at width 0.25 on
six nodes with budgets 3, 5, 8, 12, 40 and 40 MB, three a round, seed 1, one thread.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.flower import set_task_identity

METHODS = {  # name: (conf/method, more run-config)
    "profl": ("profl", {}),
    "profl-shrink": ("profl", {"overrides": "method.shrink=true method.output_depth=1",
                               "share-rounds": False, "max-rounds-stage1": 3,
                               "max-rounds-stage2": 3}),
    "profl-noplans": ("profl", {"plans": "off"}),
    **{m: (m, {}) for m in ("fedavg", "exclusive", "allsmall", "heterofl", "fedrolex",
                            "depthfl", "inclusivefl", "profl_fedprox")},
}  # fmt: skip
LOGGED = ("round", "stage", "block", "em", "selected", "aggregated", "accuracy", "train_loss",
          "need_mb", "bytes_down", "bytes_up")  # fmt: skip


def fingerprint(method: str, data_dir: str) -> dict:
    """One short run of ``method``: its summary figures and per-round log."""
    base, extra = METHODS[method]
    budgets = [3, 5, 8, 12, 40, 40]
    nodes = [
        {"partition-id": i, "num-partitions": 300, "memory-mb": m} for i, m in enumerate(budgets)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"preset": "laptop", "method": base, "data-dir": data_dir, "outputs-dir": tmp,
               "width": 0.25, "seed": 1, "fraction-train": 0.5, "eval-every": 2,
               "num-server-rounds": 12 if base.startswith("profl") else 4,
               "checkpoint-every": 0, **extra}  # fmt: skip
        s = run_profl(InProcessGrid(nodes), cfg)
        rounds = json.loads(next(Path(tmp).rglob("results.json")).read_text())["rounds"]
    history = [{k: r.get(k) for k in LOGGED} for r in rounds]
    digest = hashlib.sha256(json.dumps(history, sort_keys=True, default=str).encode())
    return {"final_accuracy": s["final_accuracy"], "final_loss": s["final_loss"],
            "rounds": s["rounds"], "transitions": s["transitions"],
            "history_sha": digest.hexdigest()[:16], "history": history}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    set_task_identity()
    data_dir, out = sys.argv[1], Path(sys.argv[2])
    found = {}
    for method in METHODS:
        found[method] = fingerprint(method, data_dir)
        f = found[method]
        print(method, f["final_accuracy"], f["final_loss"], f["history_sha"], flush=True)
    out.write_text(json.dumps(found, indent=1, default=str))


if __name__ == "__main__":
    main()
