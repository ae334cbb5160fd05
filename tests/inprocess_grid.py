"""A Grid that hands messages straight to this app's ClientApp handlers, in-process.

It runs the real strategy against the real client code with no Ray and no
SuperLink: fast and deterministic, and a place to inject faults (a node that
crashes, goes silent, or lies in its reply).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

from client_app.app import HANDLERS as CLIENT_HANDLERS
from profl_strategy.protocol import CONFIG, TRAIN_STEP, StepOrder

Fault = Callable[[Message, Message], Message | None]  # (request, reply) -> reply or None
HANDLERS = dict(CLIENT_HANDLERS)  # every message type the ClientApp registers


class InProcessGrid(Grid):
    """Nodes ``1..N`` with the given node configs; ``faults`` rewrite train replies."""

    def __init__(self, node_configs: list[dict], faults: dict[int, Fault] | None = None) -> None:
        self.contexts = {
            i + 1: Context(
                run_id=1, node_id=i + 1, node_config=nc, state=RecordDict(), run_config={}
            )
            for i, nc in enumerate(node_configs)
        }
        self.faults = faults or {}
        self.train_requests: list[tuple[int, int, int]] = []  # (node, stage, block)

    def set_run(self, run_id: int) -> None:  # noqa: D102 - not used in-process
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

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message and collect replies; a silent node gives none."""
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # the SuperLink would
            node = msg.metadata.dst_node_id
            kind = msg.metadata.message_type
            if kind == TRAIN_STEP:
                step = StepOrder.from_record(msg.content[CONFIG]).step
                self.train_requests.append((node, step.stage, step.block))
            try:
                reply = HANDLERS[kind](msg, self.contexts[node])
            except Exception as err:  # noqa: BLE001 - becomes an error reply, as in Flower
                reply = Message(Error(code=2, reason=repr(err)), reply_to=msg)
            if kind == TRAIN_STEP and node in self.faults:
                reply = self.faults[node](msg, reply)
            if reply is not None:
                replies.append(reply)
        return replies
