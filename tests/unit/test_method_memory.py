"""benchmarks.memory.methods: the jobs a run sent, and the models the ClientApp builds for them."""

from __future__ import annotations

import pytest
import torch

from benchmarks.memory.methods import Job, _model_and_loss, from_preset, jobs_of_run
from profl_strategy.task.model_key import ModelKey
from profl_strategy.task.train import train_step

KEY = ModelKey("resnet18", 10, (3, 32, 32), 0.125, 1)


def _results(strategy: str, rounds: list[dict]) -> dict:
    return {"config": {"method": {"strategy": f"pkg.mod.{strategy}"}}, "rounds": rounds}


def test_jobs_are_distinct_with_their_largest_estimate() -> None:
    rounds = [
        {
            "stage": 2,
            "block": 1,
            "need_mb": 9.0,
            "selected_nodes": [
                {"plan": "plain", "plan_need_mb": 9.0},
                {"plan": "mb16", "plan_need_mb": 5.0},
            ],
        },
        {
            "stage": 2,
            "block": 1,
            "need_mb": 9.5,
            "selected_nodes": [{"plan": "plain", "plan_need_mb": 9.5}],
        },
        {"stage": 2, "block": 2, "need_mb": 4.0, "selected_nodes": [{}]},  # plans off
    ]
    jobs = jobs_of_run("profl", _results("ProFL", rounds))
    assert [(j.label, j.est_mb, j.count) for j in jobs] == [
        ("s2b1/mb16", 5.0, 1),
        ("s2b1/plain", 9.5, 2),
        ("s2b2/plain", 4.0, 1),
    ]
    tiers = [
        {
            "stage": 0,
            "block": 4,
            "need_mb": 20.0,
            "selected_nodes": [{"tier": "k=1", "need_mb": 6.0}, {"tier": "k=2", "need_mb": 14.0}],
        }
    ]
    depth = jobs_of_run("inclusivefl", _results("InclusiveFL", tiers))
    assert [(j.kind, j.label) for j in depth] == [("depth:0", "k=1"), ("depth:0", "k=2")]
    assert jobs_of_run("depthfl", _results("DepthFL", tiers))[0].kind == "depth:1"


def test_each_job_builds_the_clients_model_and_trains() -> None:
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    cases = {
        Job("m", "step", "s2b1/plain", 1.0, 1): 1,
        Job("m", "width", "r=0.25", 1.0, 1): 1,
        Job("m", "depth:1", "k=2", 1.0, 1): 2,  # DepthFL: a head per block
        Job("m", "depth:0", "k=2", 1.0, 1): 1,  # InclusiveFL: the top head only
    }
    for job, n_out in cases.items():
        model, loss_fn, plan = _model_and_loss(KEY, job)
        out = model(x)
        assert (len(out) if isinstance(out, list) else 1) == n_out
        kw = {"loss_fn": loss_fn} if loss_fn else {}
        loss, seen = train_step(
            model,
            [(x, y)],
            epochs=1,
            lr=0.01,
            momentum=0.9,
            weight_decay=0.0,
            proximal_mu=0.0,
            device=torch.device("cpu"),
            **kw,
        )
        assert seen == 4 and loss > 0 and plan is None
    _, _, plan = _model_and_loss(KEY, Job("m", "step", "s2b1/mb16+ckpt", 1.0, 1))
    assert plan is not None and plan.micro_batch == 16


@pytest.mark.slow
def test_planned_jobs_follow_each_strategys_own_choice() -> None:
    spec = from_preset("laptop", 20, ["profl", "fedavg", "exclusive", "heterofl", "depthfl"], "")
    runs = {r["method"]: [Job(**j) for j in r["jobs"]] for r in spec["runs"]}
    (full,) = runs["fedavg"]  # the whole model on every node, budgets ignored
    assert full.kind == "step" and full.count == 20
    (excl,) = runs["exclusive"]  # the same job, only where it fits: one node in 20 (laptop)
    assert excl.label == full.label and 1 <= excl.count < 20
    profl = runs["profl"]
    # ProFL's default schedule is stage 2 only (method.shrink: false)
    assert {j.label.split("/")[0] for j in profl} == {f"s2b{b}" for b in range(4)}
    assert max(j.est_mb for j in profl) < full.est_mb
    assert sum(j.count for j in runs["heterofl"]) == 20  # every node holds some width tier
    assert {j.kind for j in runs["depthfl"]} == {"depth:1"}
