"""A ClientApp that wraps this app's real handlers and misbehaves on some partitions.

Copied into a throw-away copy of the app by ``tests/e2e/test_faults_simulation.py``
and named as its ``clientapp``, so a real Ray simulation meets crashing, slow,
timed-out and lying clients. Never part of the shipped app.

The delays are relative to each message's own deadline (``created_at + ttl``,
the server's round timeout), not fixed seconds: the test sizes the round
timeout from a healthy round measured on the same machine, so the faults keep
their meaning however loaded the machine is.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from client_app.app import budget, train
from client_app.mods import skip_expired
from profl_strategy.engine.protocol import Expired

# partition id -> fault; the other partitions are honest. The simulation engine
# hands a round's messages to its actor in partition order, so the node that
# hangs comes last and its round still gets the other nodes' replies.
FAULTS = {0: "crash", 2: "slow", 3: "nan", 4: "lie", 5: "shape", 6: "extra-key", 9: "timeout-once"}
SLOW_SHARE = 0.1  # the slow node waits this share of the round timeout: late, never too late
LATE_BY_S = 1.0  # the hanging node wakes this long after the server stopped waiting

# Only skip_expired, not the shipped app's thread pinning: the test runs every
# process on one torch thread (OMP_NUM_THREADS=1), whatever Ray assigns.
app = ClientApp(mods=[skip_expired])
app.query("budget")(budget)


def _first_time(context: Context, flag: str) -> bool:
    """True only on the first call per node (node state persists in simulation)."""
    seen = context.state.config_records.setdefault("faults", ConfigRecord())
    first = flag not in seen
    seen[flag] = True
    return first


def _seconds_left(msg: Message) -> float:
    """Seconds until the server stops waiting for this message's reply."""
    return msg.metadata.created_at + msg.metadata.ttl - time.time()


@app.train("step")
def faulty_train(msg: Message, context: Context) -> Message:
    """The real training handler, then the partition's fault."""
    fault = FAULTS.get(int(context.node_config["partition-id"]))
    if fault == "crash":
        raise RuntimeError("injected crash")
    if fault == "timeout-once" and _first_time(context, "slept"):
        # Hang past the deadline, then give up without training: the actor is
        # free again exactly when the next round starts.
        time.sleep(max(0.0, _seconds_left(msg)) + LATE_BY_S)
        return Message(Expired(max(0.0, -_seconds_left(msg))).content(), reply_to=msg)
    reply = train(msg, context)
    if fault == "slow":
        time.sleep(min(SLOW_SHARE * msg.metadata.ttl, max(0.0, _seconds_left(msg)) / 2))
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
