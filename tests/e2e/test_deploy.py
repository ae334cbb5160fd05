"""A real, secure deployment on 127.0.0.1: SuperLink with TLS and SuperNode
authentication, three SuperNodes with different memory budgets (one below every
step), a fourth with ``memory-mb=nan`` that the run must leave out, a short ProFL
run through both stages, and a SuperNode with an unregistered key that must be
refused, with a message that names its key.

Drives the scripts in deploy/ exactly as a user would; everything started is
stopped by deploy/down.sh in the fixture finalizer, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profl_strategy.memory.runtime import CPU_CALL_ALLOWANCE_MB
from profl_strategy.task.split_order import validation_count
from tests.support.paths import REPO, shared_data

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

DEPLOY = REPO / "deploy"
DATA = shared_data()
WIDTH = 0.25
# 4 steps per stage, one round each; the progressive machinery this test checks, pinned:
# both stages, fixed caps, plain training, one-block output modules (budgets sized for it).
VAL_FRACTION = 0.1
RUN_CONFIG = (
    f"preset='laptop' val-fraction={VAL_FRACTION} min-rounds-per-step=1 max-rounds-stage1=1 "
    "max-rounds-stage2=1 num-server-rounds=8 "
    f"width={WIDTH} partitioner='iid' seed=0 share-rounds=false plans='off' "
    "overrides='method.shrink=true method.output_depth=1'"
)
NUM_PARTITIONS = 30  # 1.8k Fashion-MNIST images per node: a round is mostly Flower's own
# What a CPU node holds besides the model and takes off its memory-mb: its rows (uint8
# images, int64 labels; the server's validation rows are in no partition) and the runtime
# allowance (client_app.node.call_overhead_mb). The run pins its preset: a preset that
# subsamples would make a node hold its whole partition besides (client_app.node.data_mb).
ROWS = (60_000 - validation_count(60_000, VAL_FRACTION)) // NUM_PARTITIONS
OVERHEAD_MB = ROWS * (28 * 28 + 8) / 2**20 + CPU_CALL_ALLOWANCE_MB


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _step_needs_mb() -> dict[str, float]:
    """Per-step peak estimates for the test's run config, computed as the ServerApp does."""
    from flwr.common.config import get_fused_config_from_dir, parse_config_args

    from profl_strategy.memory.model import estimate_step
    from profl_strategy.methods.profl.schedule import progressive_steps
    from profl_strategy.run.config import compose_config
    from profl_strategy.task.dataset_info import get_info
    from profl_strategy.task.model_key import ModelKey

    # The run config the ServerApp will get: pyproject defaults + the test's overrides.
    overrides = parse_config_args([RUN_CONFIG, f"data-dir='{DATA}'"])
    cfg = compose_config(dict(get_fused_config_from_dir(REPO, overrides)))
    info = get_info(cfg.dataset.name)
    key = ModelKey(
        cfg.model.name,
        info.num_classes,
        info.input_shape,
        float(cfg.model.width),
        int(cfg.method.output_depth),
    )
    batch = int(cfg.train.batch_size)
    return {
        str(s): estimate_step(key, s, batch).total_mb
        for s in progressive_steps(key.spec().num_blocks)
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The Flower CLIs of the interpreter running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("FLWR_HOME", None)
    return env


def _sh(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *map(str, args)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _show(proc: subprocess.CompletedProcess[str], tail: int = 6000) -> str:
    return (
        f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-tail:]}"
        f"\n--- stderr ---\n{proc.stderr[-tail:]}"
    )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    if not (DATA / "FashionMNIST").is_dir():
        pytest.skip(f"offline data not found at {DATA}")
    for tool in ("openssl", "ssh-keygen", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("deploy/down.sh needs /proc (Linux)")

    needs = _step_needs_mb()
    lo, hi = min(needs.values()), max(needs.values())
    # Below every step / some steps but not all / every step: the budgets nodes report, for
    # the model; each node's memory-mb adds what it holds besides (OVERHEAD_MB).
    budgets = [round(lo / 2, 2), round((lo + hi) / 2, 2), round(2 * hi, 2)]
    typed = [round(b + OVERHEAD_MB, 2) for b in budgets]
    assert any(n > budgets[1] for n in needs.values()) and any(
        n <= budgets[1] for n in needs.values()
    ), f"the middle budget {budgets[1]} should hold some steps but not all: {needs}"

    state = tmp_path_factory.mktemp("profl-deploy")
    link_port, *ports = _free_ports(1 + len(budgets) + 2)
    node_ports, rogue_port, nan_port = ports[:-2], ports[-2], ports[-1]

    def down() -> None:
        proc = _sh([DEPLOY / "down.sh", "--state", state, "--grace", "5"], timeout=120)
        if proc.returncode != 0:
            print("deploy/down.sh failed:\n" + _show(proc), file=sys.stderr)

    request.addfinalizer(down)  # registered before anything starts
    up = _sh(
        [
            DEPLOY / "up.sh",
            "--state", state,
            "--budgets", ",".join(map(str, typed)),
            "--port", link_port,
            "--node-ports", ",".join(map(str, node_ports)),
            "--data-dir", DATA,
            "--num-partitions", NUM_PARTITIONS,
            "--timeout", 120,
        ],
        timeout=240,
    )  # fmt: skip
    assert up.returncode == 0, "deploy/up.sh failed:\n" + _show(up)

    rows = (state / "nodes.tsv").read_text().splitlines()[1:]
    node_typed = {int(r.split("\t")[1]): float(r.split("\t")[2]) for r in rows}
    node_index = {int(r.split("\t")[1]): int(r.split("\t")[0]) for r in rows}
    assert sorted(node_typed.values()) == sorted(typed)
    node_budget = {n: mb - OVERHEAD_MB for n, mb in node_typed.items()}
    nan_node = _start_nan_node(state, len(budgets), nan_port, f"127.0.0.1:{link_port}", request)
    return {
        "state": state,
        "nan_node": nan_node,
        "budgets": budgets,
        "needs": needs,
        "node_budget": node_budget,
        "node_index": node_index,
        "rogue_port": rogue_port,
        "out": tmp_path_factory.mktemp("profl-deploy-out"),
    }


def _start_nan_node(
    state: Path, index: int, port: int, superlink: str, request: pytest.FixtureRequest
) -> int:
    """Register one more key and start its SuperNode with ``memory-mb=nan``; its node id.

    Started as a user would start a device by hand (docs/deployment.md §3), in its own
    process group, which the finalizer stops.
    """
    certs = _sh([DEPLOY / "certs.sh", "--dir", state, "--nodes", index + 1], timeout=120)
    assert certs.returncode == 0, _show(certs)
    key = state / "keys" / f"node{index}"
    env = _env() | {"FLWR_HOME": str(state / ".flwr" / "cli"), "OMP_NUM_THREADS": "1"}
    reg = subprocess.run(
        ["flwr", "supernode", "register", f"{key}.pub", "profl-tls", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert '"node-id"' in reg.stdout, f"registering {key}.pub failed: {reg.stdout}{reg.stderr}"
    node_id = int(json.loads(reg.stdout)["node-id"])
    home = state / ".flwr" / f"node{index}"
    home.mkdir(parents=True)
    log = state / "logs" / f"node{index}.log"
    config = f"partition-id={index} num-partitions={NUM_PARTITIONS} memory-mb=nan data-dir='{DATA}'"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                "flower-supernode",
                "--root-certificates", str(state / "certs" / "ca.crt"),
                "--superlink", superlink,
                "--auth-supernode-private-key", str(key),
                "--port", str(port),
                "--node-config", config,
            ],
            env=env | {"FLWR_HOME": str(home)}, cwd=home, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def stop() -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # its own group: the SuperNode and its children
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue

    request.addfinalizer(stop)
    deadline = time.monotonic() + 120
    while "SuperNode ID:" not in log.read_text():  # activated: online before the run starts
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return node_id


def test_unregistered_supernode_is_refused(deployment) -> None:
    proc = _sh(
        [
            DEPLOY / "rogue_node.sh",
            "--state", deployment["state"],
            "--port", deployment["rogue_port"],
            "--timeout", 60,
        ],
        timeout=120,
    )  # fmt: skip
    log = (deployment["state"] / "logs" / "rogue.log").read_text()
    assert proc.returncode == 0, "the rogue SuperNode was not refused:\n" + _show(proc) + log
    assert "Failed to activate" in log
    assert "SuperNode ID:" not in log
    # The user is told which key is unknown and how to register it, not "a network fault".
    key = deployment["state"] / "rogue" / "key"
    assert f"SuperNode rogue (key {key}) is not registered with the SuperLink" in proc.stderr
    cli = deployment["state"] / ".flwr" / "cli"
    assert f"FLWR_HOME={cli} flwr supernode register {key}.pub profl-tls" in proc.stderr
    # ...and only about that key: a registered key is not reported as unknown.
    state = deployment["state"]
    other = subprocess.run(
        [
            "bash", "-c", 'source deploy/lib.sh && explain_unregistered "$@"', "-",
            "0", state / "keys" / "node0", state / "logs" / "rogue.log",
            state / "logs" / "superlink.log", cli,
        ],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert other.returncode == 1 and "not registered" not in other.stderr, other.stderr


def test_profl_run_through_both_stages_within_budgets(deployment) -> None:
    state = deployment["state"]
    run = _sh(
        [
            DEPLOY / "run.sh",
            "--state", state,
            f"outputs-dir='{deployment['out']}'",
            RUN_CONFIG,
        ],
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, "deploy/run.sh failed:\n" + _show(run)
    found = re.findall(r"^RESULTS=(.+)$", run.stdout, flags=re.M)
    assert found, "deploy/run.sh did not report results.json:\n" + _show(run)
    results = Path(found[-1])
    assert results.is_relative_to(deployment["out"])
    data = json.loads(results.read_text())
    summary, rounds = data["summary"], data["rounds"]

    # The whole schedule ran, through both stages, and learned something.
    assert summary["schedule_done"] is True
    assert summary["final_accuracy"] > 0.2, summary
    assert {r["stage"] for r in rounds} == {1, 2}
    steps_trained = {f"s{r['stage']}b{r['block']}" for r in rounds if r.get("selected", 0) > 0}
    assert steps_trained == set(deployment["needs"]), steps_trained
    # The server's estimates are the ones the budgets were chosen from.
    server_needs = summary["step_peak_mb_est"]
    assert server_needs == pytest.approx(deployment["needs"], abs=0.01), server_needs

    # Every node reported its budget, the too-small one included; the log says them as
    # they are (two decimals), and says once why the memory-mb=nan node is left out.
    budgets = deployment["budgets"]
    assert sorted(summary["budgets_mb"]) == pytest.approx(sorted(budgets), abs=0.01)
    assert summary["refusals"] == 0
    found = re.search(r"budgets known for 3 online nodes: (.*) MB; 1 left out", run.stdout)
    assert found, run.stdout[-6000:]
    listed = [float(b) for b in found.group(1).split(", ")]
    assert listed == pytest.approx(sorted(budgets), abs=0.01)
    nan_node = deployment["nan_node"]
    left_out = re.findall(rf"node {nan_node} is left out of the run.*", run.stdout)
    assert len(left_out) == 1, left_out
    assert f"SuperNode {nan_node}: node-config memory-mb=nan is not allowed" in left_out[0]
    assert "finite number of MB > 0" in left_out[0]
    assert all(nan_node not in {int(c["node"]) for c in r["selected_nodes"]} for r in rounds)

    # No node was ever asked for a step above its budget (budgets from up.sh's node-config).
    node_budget = deployment["node_budget"]
    tiny = min(node_budget, key=node_budget.get)
    selected_count = 0
    for r in rounds:
        assert r.get("refused", 0) == 0, r
        assert "selected_nodes" in r, f"results.json round lacks 'selected_nodes': {sorted(r)}"
        chosen = r["selected_nodes"]
        assert len(chosen) == r["selected"], r
        selected_count += len(chosen)
        for c in chosen:
            nid = int(c["node"])
            assert nid in node_budget, f"round {r['round']}: unknown node {nid}"
            assert node_budget[nid] >= r["need_mb"], (
                f"round {r['round']}: node {nid} with {node_budget[nid]} MB was asked "
                f"for a step that needs {r['need_mb']:.2f} MB"
            )
            assert c["budget_mb"] == pytest.approx(node_budget[nid], abs=0.01)
        # Each deployed node measured its call (strict allocator, guard on) within its budget.
        for nid, m in r.get("measured_nodes", {}).items():
            assert m["policy"] == "strict", (r["round"], nid, m)
            assert 0 < m["measured_mb"] <= m["budget_mb"], (r["round"], nid, m)
        # Every online node that holds the step was eligible; none that does not.
        assert r["eligible"] == sum(b >= r["need_mb"] for b in node_budget.values()), r
        assert tiny not in {int(c["node"]) for c in r["selected_nodes"]}

    # The SuperNodes' own logs agree: the small node never got a train message, and
    # no node had to refuse one.
    logs = state / "logs"
    received = 0
    for nid, idx in deployment["node_index"].items():
        text = (logs / f"node{idx}.log").read_text()
        n_train = text.count("Receiving: train.step")
        received += n_train
        assert "MB: refused" not in text, f"node{idx} refused a step:\n{text[-3000:]}"
        if nid == tiny:
            assert n_train == 0, f"the {node_budget[nid]} MB node was sent a step"
            assert "Receiving: query.budget" in text
    assert received == selected_count
    nan_log = (logs / f"node{len(node_budget)}.log").read_text()
    assert "Receiving: query.budget" in nan_log and "Receiving: train.step" not in nan_log
    assert "node-config memory-mb=nan is not allowed" in nan_log  # the node's own log says so


def test_down_stops_every_process(deployment) -> None:
    state = deployment["state"]
    recorded = [line.split("\t")[:2] for line in (state / "pids").read_text().splitlines()]
    assert len(recorded) == 1 + len(deployment["budgets"])
    pids = [int(pid) for _, pid in recorded]
    children = []
    for pid in pids:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        children += [int(p) for p in out.stdout.split()]
    assert children, "expected flower-superexec children"

    down = _sh([DEPLOY / "down.sh", "--state", state, "--grace", "10"], timeout=120)
    assert down.returncode == 0, _show(down)

    def running(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    left = [p for p in pids + children if running(p)]
    assert not left, f"still running after deploy/down.sh: {left}"
    assert not (state / "pids").exists()
