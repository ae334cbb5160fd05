"""The app's in-process Grid (:mod:`server_app.inprocess`) with faults, for tests.

It runs the real strategy against the real client handlers with no Ray and no
SuperLink: fast and deterministic, and a place to inject faults (a node that
crashes, goes silent, or lies in its reply). Handlers are called directly (no
mods), so a test controls torch's threads and message expiry itself.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message

from client_app.app import HANDLERS as CLIENT_HANDLERS
from profl_strategy.engine.protocol import CONFIG, TRAIN_STEP, StepOrder
from server_app import inprocess

Fault = Callable[[Message, Message], Message | None]  # (request, reply) -> reply or None
HANDLERS = dict(CLIENT_HANDLERS)  # every message type the ClientApp registers


class InProcessGrid(inprocess.InProcessGrid):
    """Nodes ``1..N`` with the given node configs; ``faults`` rewrite train replies."""

    def __init__(self, node_configs: list[dict], faults: dict[int, Fault] | None = None) -> None:
        super().__init__(node_configs)
        self.faults = faults or {}
        self.train_requests: list[tuple[int, int, int]] = []  # (node, stage, block)

    def deliver(self, msg: Message) -> Message | None:
        """The handler's reply, rewritten by the node's fault if it has one (the fault
        sees the request with its arrays whole)."""
        reply = super().deliver(msg)
        node = msg.metadata.dst_node_id
        if msg.metadata.message_type == TRAIN_STEP and node in self.faults:
            return self.faults[node](msg, reply)  # type: ignore[arg-type]
        return reply

    def answer(self, msg: Message, context: Context) -> Message | None:
        """The registered handler's reply (no mods), on the node's own copy of the arrays."""
        node, kind = msg.metadata.dst_node_id, msg.metadata.message_type
        if kind == TRAIN_STEP:
            step = StepOrder.from_record(msg.content[CONFIG]).step
            self.train_requests.append((node, step.stage, step.block))
        return HANDLERS[kind](msg, context)
