"""A deployed SuperNode runs every message in a fresh ClientApp process, import included.

Importing the ClientApp, and answering a budget query, must therefore leave out
the modules that only training or data loading need: each costs seconds per
message. A train message reads its partition from the disk cache once the
first one has split it, so from then on it imports no data stack either.
Checked through ``sys.modules`` in a fresh interpreter, not by timing, so the
tests hold on a loaded machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from flwr.common.serde import message_to_proto

from profl_strategy.engine.protocol import TRAIN_STEP
from profl_strategy.memory.model import estimate_step
from tests.support.client import DATA_MB, KEY, NODE, STEP, message
from tests.support.fresh import run_fresh

pytestmark = pytest.mark.slow  # fresh interpreters, each importing torch

# Imported on first use by the handlers that need them (a model, the data), never on import.
LAZY = (
    "torchvision",  # the architectures and the offline MNIST reader
    "PIL",  # decoding CIFAR-10 JPEGs (and imported by torchvision)
    "torch._dynamo",  # pulled in by torchvision.ops, and by building any torch optimiser
    "datasets",  # the partitioners' label table
    "flwr_datasets",
    "pyarrow",
    "pandas",
    "matplotlib",  # flwr_datasets.visualization, imported by flwr_datasets itself
    "sympy",
    "scipy",
    "hydra",  # the server's configuration only
    "omegaconf",
)
# What splitting a partition needs; a cached partition is read with numpy alone.
DATA_STACK = ("datasets", "flwr_datasets", "pyarrow", "pandas", "matplotlib")

PROBE = """
import json, sys
from flwr.app import Context, RecordDict

from client_app.app import app
from profl_strategy.engine.budgets import MemoryProfile
from profl_strategy.task.model_key import ModelKey
from profl_strategy.engine.protocol import BudgetQuery, DataSpec, RunSpec, TrainSpec

lazy = json.loads(sys.argv[1])
after_import = [m for m in lazy if m in sys.modules]
from tests.support.flower import set_task_identity
set_task_identity()
run = RunSpec(
    model=ModelKey("cnn", 10, (1, 28, 28), 0.25, 1),
    data=DataSpec("fmnist", "", "iid", 0.5, 2),
    train=TrainSpec(16, 1, 0.05, 0.9, 0.0),
    memory=MemoryProfile("uniform-tiers", (1, 1), (0.3, 1.0)),
    full_peak_mb=10.0,
    seed=0,
)
query = BudgetQuery(run).message(node=1, server_round=1, ttl=3600)
node = {"partition-id": 0, "num-partitions": 4, "memory-mb": 20.0}
context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config={})
reply = app(message=query, context=context)
print(json.dumps({
    "handlers": sorted(app._registered_funcs),
    "after_import": after_import,
    "after_budget": [m for m in lazy if m in sys.modules],
    "budget_error": reply.error.reason if reply.has_error() else None,
}))
"""


MESSAGE_PROBE = """
import json, sys
from pathlib import Path
from flwr.app import Context, RecordDict
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from client_app.app import app
from client_app.node import local_loader
from profl_strategy.engine.protocol import StepOrder

lazy, message_file, node, handle = sys.argv[1:]
proto = ProtoMessage()
proto.ParseFromString(Path(message_file).read_bytes())
msg = message_from_proto(proto)
node = json.loads(node)
context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config={})
if handle == "load":  # only the train handler's data loading
    _, labels, _ = local_loader(StepOrder.from_record(msg.content["config"]), context)
    metrics = {"num-examples": len(labels)}
else:
    metrics = dict(app(message=msg, context=context).content["metrics"])
print(json.dumps({
    "imported": [m for m in json.loads(lazy) if m in sys.modules],
    "metrics": metrics,
}))
"""


def probe(code: str = PROBE, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` (by default: import the ClientApp, answer a budget query) afresh."""
    out = run_fresh(code, json.dumps(LAZY), *args, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_client_app_import_and_budget_query_stay_light() -> None:
    seen = probe()
    # Registration still happens at import: ProFL's handlers and the baselines'.
    registered = {"query.budget", "train.step", "train.width", "train.depth", "query.bnstats"}
    assert registered <= set(seen["handlers"])
    assert seen["after_import"] == [], "imported by `import client_app.app`"
    assert seen["budget_error"] is None
    assert seen["after_budget"] == [], "imported to answer a budget query"


@pytest.mark.usefixtures("task_identity")
def test_train_message_reads_a_cached_partition_without_the_data_stack(
    data_dir: Path, tmp_path: Path
) -> None:
    """Train messages for one node, each in a fresh process, as a SuperNode runs them."""
    message_file = tmp_path / "train.pb"
    message_file.write_bytes(message_to_proto(message(data_dir, TRAIN_STEP)).SerializeToString())
    node = json.dumps(NODE | {"memory-mb": estimate_step(KEY, STEP, 16).total_mb * 1.1 + DATA_MB})
    env = os.environ | {"PROFL_CACHE_DIR": str(tmp_path / "cache")}

    def run(handle: str) -> dict:
        return probe(MESSAGE_PROBE, str(message_file), node, handle, env=env)

    first = run("train")
    # The first message splits the data with flwr-datasets, and caches its partition.
    assert {"datasets", "flwr_datasets"} <= set(first["imported"])
    assert len(list((tmp_path / "cache" / "partitions").glob("*.npy"))) == 2
    loaded = run("load")
    assert loaded["imported"] == [], "imported to read a cached partition"
    again = run("train")
    # Building the model and the optimiser still import torchvision and torch._dynamo.
    assert not set(again["imported"]) & set(DATA_STACK), again["imported"]
    # The same rows and the same seeded training: the same result.
    assert again["metrics"]["num-examples"] == loaded["metrics"]["num-examples"] == 300
    assert again["metrics"]["train-loss"] == pytest.approx(first["metrics"]["train-loss"])
