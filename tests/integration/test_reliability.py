"""Refused checkpoints, faulty clients, infeasible runs and resume rules (in-process).

Kill-and-resume equivalence is in ``tests/e2e/test_kill_resume.py``; the checkpoint's
fingerprint and the run folders in ``tests/unit/test_run_folders.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from profl_strategy.engine.checkpoint import CheckpointError
from profl_strategy.engine.feasibility import InfeasibleRunError
from profl_strategy.memory.runtime import CPU_CALL_ALLOWANCE_MB
from profl_strategy.run.config import ConfigError
from server_app.app import run_profl
from tests.inprocess_grid import InProcessGrid
from tests.support.runs import NODES, config, read_rounds

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.mark.slow
def test_corrupt_or_foreign_checkpoints_are_refused(data_dir: Path, tmp_path: Path) -> None:
    cut = run_profl(InProcessGrid(NODES), config(data_dir, tmp_path, **{"num-server-rounds": 1}))
    ckpt = Path(cut["run_dir"]) / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="another configuration"):
        run_profl(InProcessGrid(NODES), config(data_dir, tmp_path, resume=str(ckpt), lr=0.01))
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        run_profl(InProcessGrid(NODES), config(data_dir, tmp_path, resume=str(ckpt)))


def lie(change) -> object:  # noqa: ANN001
    """A fault that rewrites a good reply's arrays or metrics (it still says 'trained')."""

    def fault(request: Message, reply: Message) -> Message:
        if reply.has_error() or "arrays" not in reply.content.array_records:
            return reply
        arrays, metrics = change(reply.content["arrays"], reply.content["metrics"])
        content = {"arrays": arrays, "metrics": metrics, "config": reply.content["config"]}
        return Message(RecordDict(content), reply_to=request)

    return fault


def nan_arrays(a: ArrayRecord, m: MetricRecord) -> tuple:
    return ArrayRecord({k: Array(np.full_like(v.numpy(), np.nan)) for k, v in a.items()}), m


def wrong_keys(a: ArrayRecord, m: MetricRecord) -> tuple:
    return ArrayRecord({f"blocks.99.{k}": v for k, v in a.items()}), m


def wrong_shapes(a: ArrayRecord, m: MetricRecord) -> tuple:
    return ArrayRecord({k: Array(np.zeros((3, 3), dtype=np.float32)) for k in a}), m


def negative_examples(a: ArrayRecord, m: MetricRecord) -> tuple:
    m = MetricRecord(dict(m))
    m["num-examples"] = -5
    return a, m


@pytest.mark.slow
def test_faulty_clients_never_reach_the_global_model(data_dir: Path, tmp_path: Path) -> None:
    faults = {
        1: lie(nan_arrays),
        2: lie(wrong_keys),
        3: lie(wrong_shapes),
        4: lie(negative_examples),
        5: lambda request, reply: None,  # silent: never replies
    }
    nodes = [{"partition-id": i, "num-partitions": 60} for i in range(10)]
    grid = InProcessGrid(nodes, faults)
    grid.contexts[6].node_config["data-dir"] = "/no/such/dir"  # crashes in the handler
    cfg = config(
        data_dir, tmp_path, **{"fraction-train": 1.0, "memory-scale": 4.0, "num-server-rounds": 30}
    )
    summary = run_profl(grid, cfg)
    assert summary["schedule_done"]
    assert summary["rejected_replies"] > 0  # the four liars
    assert summary["failed_replies"] > 0  # the node whose handler crashes: error replies
    assert math.isfinite(summary["final_loss"]) and summary["final_accuracy"] > 0.3
    results = Path(summary["run_dir"]) / "results.json"
    assert "nan" not in results.read_text().lower().replace('nan"', "")  # no NaN metrics
    state = torch.load(Path(summary["run_dir"]) / "checkpoint.pt", weights_only=False)["state"]
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())


@pytest.mark.parametrize(
    ("method", "memory_mb", "batch_size", "names"),
    [
        ("profl", 0.5, 32, "s2b0"),  # no budget holds even the cheapest step
        ("profl", 10.0, 1024, "batch-size=1024"),  # a batch no node can hold (at 32 all do)
        ("exclusive", 2.0, 32, "s0b3"),  # nobody holds the full model
        ("heterofl", 0.05, 32, "smallest HeteroFL sub-model"),
    ],
)
def test_infeasible_runs_stop_before_training(
    data_dir: Path,
    tmp_path: Path,
    method: str,
    memory_mb: float,
    batch_size: int,
    names: str,
) -> None:
    # memory-mb also holds each node's 1,000 rows and the runtime allowance
    overhead = 1000 * (28 * 28 + 8) / 2**20 + CPU_CALL_ALLOWANCE_MB
    nodes = [{**n, "memory-mb": memory_mb + overhead} for n in NODES]
    grid = InProcessGrid(nodes)
    # all 1,000 rows, as the overhead above counts them (the run stops before training)
    cfg = config(
        data_dir, tmp_path, method=method, **{"batch-size": batch_size, "data-subsample": 1.0}
    )
    with pytest.raises(InfeasibleRunError, match=names) as err:
        run_profl(grid, cfg)
    assert "largest budget" in str(err.value)
    assert grid.train_requests == []  # nothing was trained


@pytest.mark.slow
def test_full_model_run_resumes_with_more_rounds(data_dir: Path, tmp_path: Path) -> None:
    first = run_profl(
        InProcessGrid(NODES),
        config(data_dir, tmp_path, method="fedavg", **{"num-server-rounds": 2}),
    )
    assert first["rounds"] == 2
    more = run_profl(
        InProcessGrid(NODES),
        config(
            data_dir, tmp_path, method="fedavg", resume=first["run_dir"], **{"num-server-rounds": 3}
        ),
    )
    assert more["rounds"] == 3


@pytest.mark.slow
def test_plans_let_small_nodes_train_every_step(data_dir: Path, tmp_path: Path) -> None:
    extra = {
        "memory-profile": "fedrolex",
        "fraction-train": 1.0,
        "min-rounds-per-step": 1,
        "data-subsample": 0.2,  # plans change who trains, not how much: 200 rows a node
    }
    plain = run_profl(InProcessGrid(NODES), config(data_dir, tmp_path / "off", **extra))
    planned = run_profl(
        InProcessGrid(NODES), config(data_dir, tmp_path / "on", plans="exact", **extra)
    )
    assert plain["schedule_done"] and planned["schedule_done"]
    rounds_off = read_rounds(plain["run_dir"])
    rounds_on = read_rounds(planned["run_dir"])
    assert any(r["eligible"] < len(NODES) for r in rounds_off)
    assert all(r["eligible"] == len(NODES) for r in rounds_on)  # 30% of full fits a plan
    for r in rounds_on:
        assert r["refused"] == 0 and r["rejected"] == 0
        for n in r["selected_nodes"]:
            assert n["plan_need_mb"] <= n["budget_mb"]
        assert r["plans_used"] == r["plans"]
    assert any(label != "plain" for r in rounds_on for label in r["plans_used"])
    assert planned["final_accuracy"] > 0.3


def test_data_dir_without_the_dataset_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    with pytest.raises(ConfigError, match="'data-dir'.*fmnist"):
        run_profl(InProcessGrid(NODES), config(empty, tmp_path / "out"))
