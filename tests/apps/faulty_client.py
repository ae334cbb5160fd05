"""A ClientApp that wraps this app's real handlers and misbehaves on some partitions.

Copied into a throw-away copy of the app by ``tests/test_faults_simulation.py``
and named as its ``clientapp``, so a real Ray simulation meets crashing, slow,
timed-out and lying clients. Never part of the shipped app.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from client_app.app import budget, train
from client_app.mods import skip_expired

# partition id -> fault; the other partitions are honest
FAULTS = {0: "crash", 1: "timeout-once", 2: "slow", 3: "nan", 4: "lie", 5: "shape", 6: "extra-key"}
TIMEOUT_SLEEP_S = 45.0  # longer than the test's round-timeout
SLOW_SLEEP_S = 2.0  # well within it

app = ClientApp(mods=[skip_expired])
app.query("budget")(budget)


def _first_time(context: Context, flag: str) -> bool:
    """True only on the first call per node (node state persists in simulation)."""
    seen = context.state.config_records.setdefault("faults", ConfigRecord())
    first = flag not in seen
    seen[flag] = True
    return first


@app.train("step")
def faulty_train(msg: Message, context: Context) -> Message:
    """The real training handler, then the partition's fault."""
    fault = FAULTS.get(int(context.node_config["partition-id"]))
    if fault == "crash":
        raise RuntimeError("injected crash")
    if fault == "timeout-once" and _first_time(context, "slept"):
        time.sleep(TIMEOUT_SLEEP_S)
    if fault == "slow":
        time.sleep(SLOW_SLEEP_S)
    reply = train(msg, context)
    arrays = reply.content["arrays"]
    first = next(iter(arrays))
    if fault == "nan":
        bad = arrays[first].numpy().copy()
        bad.flat[0] = np.nan
        arrays[first] = Array(bad)
    elif fault == "lie":
        reply.content["metrics"]["num-examples"] = -5
    elif fault == "shape":
        arrays[first] = Array(np.zeros((3, 3), dtype=np.float32))
    elif fault == "extra-key":
        arrays["blocks.99.weight"] = Array(np.zeros(4, dtype=np.float32))
    reply.content["arrays"] = ArrayRecord(dict(arrays.items()))
    return reply
