"""A Grid that hands each message to this app's ClientApp in the same process.

Flower's simulation engine needs Ray and a SuperLink; a machine without them
(the lent GPU machine has torch only) can still run the real ServerApp code
(:func:`server_app.app.run_profl`) against the real ClientApp, mods included.
The ClientApp is loaded the way Flower loads it, from the ``clientapp``
component of ``pyproject.toml``, so the ServerApp's package never imports the
client package. Messages are delivered one at a time: a round costs the sum of
its nodes' training, as in a simulation with one actor.

:func:`simulate` (``python -m server_app.inprocess``) is ``flwr run``'s simulation in
this process: the same nodes (partition ``i`` of ``N``), so the same selection,
training and ``results.json`` (``tests/e2e/test_simulation.py``), without Ray's start-up
and message passing. ``benchmarks.accuracy.compare --engine inprocess`` runs on it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tomllib
import uuid
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import parse_config_args
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

PROJECT = Path(__file__).resolve().parents[1]


def load_component(name: str = "clientapp", project: Path = PROJECT) -> ClientApp:
    """The object ``[tool.flwr.app.components].<name>`` names (``module:attribute``)."""
    config = tomllib.loads((project / "pyproject.toml").read_text())
    ref = config["tool"]["flwr"]["app"]["components"][name]
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def own_copy(array: Array) -> Array:
    """``array`` with bytes of its own, as a node receives it over the wire."""
    return Array(dtype=array.dtype, shape=array.shape, stype=array.stype,
                 data=bytes(bytearray(array.data)))  # fmt: skip


class InProcessGrid(Grid):
    """Nodes ``1..N`` with the given node configs, served by one in-process ClientApp.

    A handler's exception becomes an error reply, as Flower sends one.
    """

    def __init__(
        self,
        node_configs: list[dict],
        clientapp: ClientApp | None = None,
    ) -> None:
        # Flower's Message needs the identity of the task building it; in-process this
        # process is run 1's ServerApp (node 0) and hosts its ClientApps.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        # Its nodes are simulated (without memory-mb they take the profile's budgets) and
        # share this process with the server (their peaks are measured per call).
        os.environ["PROFL_INPROCESS_ENGINE"] = "1"
        self.contexts = {
            i + 1: Context(
                run_id=1, node_id=i + 1, node_config=nc, state=RecordDict(), run_config={}
            )
            for i, nc in enumerate(node_configs)
        }
        self.clientapp = clientapp

    def set_run(self, run: Run) -> None:  # noqa: D102 - one run in-process
        pass

    @property
    def run(self):  # noqa: ANN201, D102
        raise NotImplementedError

    def create_message(self, *args, **kwargs) -> Message:  # noqa: ANN002, ANN003, D102
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        raise NotImplementedError

    def deliver(self, msg: Message) -> Message | None:
        """The node's reply to ``msg`` (None: the node stays silent)."""
        context = self.contexts[msg.metadata.dst_node_id]
        # A transport hands each node its own arrays, which its train call consumes as it
        # loads them; the server's records (shared by a round's messages) stay whole.
        sent = dict(msg.content.array_records)
        for name, record in sent.items():
            msg.content[name] = ArrayRecord({k: own_copy(a) for k, a in record.items()})
        try:
            return self.answer(msg, context)
        except Exception as err:  # noqa: BLE001 - becomes an error reply, as in Flower
            return Message(Error(code=2, reason=repr(err)), reply_to=msg)
        finally:
            for name, record in sent.items():
                msg.content[name] = record

    def answer(self, msg: Message, context: Context) -> Message | None:
        """The ClientApp's reply to ``msg``, which holds the node's own copy of the arrays."""
        if self.clientapp is None:
            self.clientapp = load_component()
        return self.clientapp(msg, context)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message and collect the replies."""
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # the SuperLink would
            reply = self.deliver(msg)
            if reply is not None:
                replies.append(reply)
        return replies


def simulate(run_config: dict, num_nodes: int, deadline: float | None = None) -> dict:
    """One run on ``num_nodes`` simulated SuperNodes, as ``flwr run`` with
    ``num-supernodes=num_nodes`` would run it; the run's summary."""
    from server_app.app import run_profl  # the ServerApp, imported only when run

    nodes = [{"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)]
    return run_profl(InProcessGrid(nodes), run_config, deadline=deadline)


def main(argv: list[str] | None = None) -> int:
    """``python -m server_app.inprocess --nodes 20 --run-config "preset='fmnist_long'"``."""
    p = argparse.ArgumentParser(description="flwr run's simulation, in this process")
    p.add_argument("--nodes", type=int, required=True, help="num-supernodes")
    p.add_argument("--run-config", default="", help="as for flwr run --run-config")
    args = p.parse_args(argv)
    if args.nodes < 1:
        p.error(f"--nodes must be at least 1, got {args.nodes}")
    simulate(parse_config_args([args.run_config]) if args.run_config else {}, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
