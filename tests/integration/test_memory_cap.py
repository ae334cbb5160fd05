"""Measured peaks stay under the memory model's prediction, and a node stops itself past its budget.

Every measurement runs in a fresh process, prepared as a node prepares itself
(:func:`profl_strategy.memory.runtime.prepare_process`): a pytest process holds
whatever earlier tests left, which is no node's idle state.
"""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.client import DATA_MB
from tests.support.paths import REPO

pytestmark = pytest.mark.slow

ROWS = [
    "cnn:0.5:32:s2b0:plain",  # the default run's model and batch (issue 36's table)
    "cnn:0.5:32:s2b0:mb8",
    "cnn:0.5:32:s2b3:fused",
    "cnn:0.25:16:d2:plain",  # DepthFL's sub-model
    "cnn:0.25:16:w0.5:plain",  # HeteroFL's half width
    "resnet18:0.25:16:s2b1:ckpt",
]


def fresh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False,
        env=os.environ | {"PROFL_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def measured_rows() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every row's measurement, one fresh process each, as many at once as there are CPUs.

    A process's high-water mark is its own, so measuring side by side changes no figure;
    each process keeps to one thread.
    """
    workers = max(1, min(len(ROWS), len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:
        outs = pool.map(lambda row: fresh("-m", "benchmarks.memory.cpu", "--row", row), ROWS)
        return dict(zip(ROWS, outs, strict=True))


@pytest.mark.parametrize("row", ROWS)
def test_measured_peak_is_under_the_prediction(
    row: str, measured_rows: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    out = measured_rows[row]
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["method"] == "VmHWM"  # the kernel's high-water mark, not a sample
    assert 0 < result["measured_mb"] <= result["predicted_mb"], result


GUARDED_CALL = textwrap.dedent(
    """
    import json, torch
    from flwr.app import Context, RecordDict
    import client_app.step as step
    from profl_strategy.engine.protocol import read_reply
    from tests.support.client import NODE, message
    from tests.support.flower import set_task_identity

    set_task_identity()
    # A memory model that claims 0.5 MB, and a call that holds 20 MB more than it trains:
    # the check before training passes, the call cannot stay within its budget.
    class Tiny:
        total_mb = 0.5
    step.estimate_step = lambda *a, **k: Tiny()
    fit = step.fit_step
    def heavy_fit(*args):
        ballast = torch.ones(5 * 2**20)  # 20 MB, written
        return fit(*args)
    step.fit_step = heavy_fit
    msg = message({data_dir!r}, "train.step", need_mb=0.5)
    config = NODE | {{"memory-mb": 0.5 + {data_mb!r}, "memory-guard": "true"}}
    reply = step.train(msg, Context(1, 1, config, RecordDict(), {{}}))
    answer = read_reply(reply.content)
    print(json.dumps({{"kind": answer.kind, "measured": getattr(answer, "measured_mb", 0),
                      "reason": getattr(answer, "reason", ""),
                      "arrays": len(reply.content.array_records)}}))
    """
)


def test_a_node_past_its_budget_stops_and_refuses(data_dir: Path) -> None:
    code = GUARDED_CALL.format(data_dir=str(data_dir), data_mb=DATA_MB)
    out = fresh("-c", code)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["kind"] == "refused" and answer["arrays"] == 0  # stopped, nothing sent
    assert answer["measured"] > 0.5 and "over budget while training" in answer["reason"]


END_TO_END = textwrap.dedent(
    """
    import json, sys
    from profl_strategy.memory.model import estimate_full
    from profl_strategy.memory.plans.picker import PlanPicker
    from profl_strategy.methods.profl.schedule import progressive_steps
    from profl_strategy.task.model_key import ModelKey
    from server_app.app import run_profl
    from server_app.inprocess import InProcessGrid

    data_dir, out = sys.argv[1], sys.argv[2]
    key, batch, overhead = ModelKey("cnn", 10, (1, 28, 28), 0.25, 1), 32, {overhead!r}
    picker = PlanPicker(key, batch, "exact", 4)
    steps = progressive_steps(key.spec().num_blocks)
    # Budgets equal to a prediction: the full model's, the hardest step's plain need, and the
    # cheapest plan of the hardest step, each plus what the node holds besides the model.
    hardest = max(steps, key=picker.plain_mb)
    needs = [estimate_full(key, batch).total_mb, picker.plain_mb(hardest),
             picker.lowest_mb(hardest)]
    nodes = [{{"partition-id": i, "num-partitions": 200, "memory-mb": need + overhead,
               "memory-guard": "true"}} for i, need in enumerate(needs)]
    summary = run_profl(InProcessGrid(nodes), {{
        "preset": "laptop", "data-dir": data_dir, "outputs-dir": out, "width": 0.25,
        "plans": "exact", "num-server-rounds": 8, "min-rounds-per-step": 1,
        "max-rounds-stage1": 1, "max-rounds-stage2": 1, "fraction-train": 1.0,
        "eval-every": 100, "checkpoint-every": 0}})
    print(json.dumps(summary["run_dir"] if "run_dir" in summary else out))
    """
)


def test_nodes_at_their_predicted_budget_stay_under_it_in_every_round(
    data_dir: Path, tmp_path: Path
) -> None:
    from profl_strategy.memory.runtime import CPU_CALL_ALLOWANCE_MB

    overhead = 300 * (28 * 28 + 8) / 2**20 + CPU_CALL_ALLOWANCE_MB  # 300 rows a node
    code = END_TO_END.format(overhead=overhead)
    out = fresh("-c", code, str(data_dir), str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = tmp_path.rglob("results.json")
    rounds = json.loads(results.read_text())["rounds"]
    measured = [(r["round"], n, m) for r in rounds for n, m in r.get("measured_nodes", {}).items()]
    # the third node fits only the hardest step's cheapest plan, not every step's
    assert len(measured) >= 2 * len(rounds) and len(rounds) == 8, rounds
    for rnd, node, m in measured:
        assert m["policy"] == "strict"
        assert 0 < m["measured_mb"] <= m["budget_mb"], (rnd, node, m)
    assert all(r.get("overruns", 0) == 0 for r in rounds)


SHARED_PROCESS = textwrap.dedent(
    """
    import json, numpy as np, torch
    from profl_strategy.memory.peak import PeakMeter, idle_rss_mb
    idle_rss_mb()  # the process's idle size, before any node's call
    leftover = np.ones(64 * 2**20, dtype=np.uint8)  # another node's data, still resident
    def call():
        buf = np.ones(16 * 2**20, dtype=np.uint8)
        return int(buf[::4096].sum())
    out = {}
    for name, shared in (("own", None), ("shared", 0.0)):
        with PeakMeter(torch.device("cpu"), shared_less_mb=shared) as meter:
            call()
        out[name] = meter.result.peak_mb
    print(json.dumps(out))
    """
)


def test_a_node_sharing_a_process_is_measured_from_its_calls_start() -> None:
    # A simulation's Ray actor hosts many nodes: what one left resident is not the next's.
    out = fresh("-c", SHARED_PROCESS)
    assert out.returncode == 0, out.stderr[-2000:]
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    assert 15 <= peaks["shared"] < 30, peaks
    assert peaks["own"] >= 64 + 15, peaks  # over the idle process: the leftover counts
