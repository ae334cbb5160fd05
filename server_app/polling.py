"""A Grid that collects replies as soon as they arrive.

Flower's ``HttpGrid`` (the grid of every ``flwr run``, simulation and deployment) sleeps
3 s between pulls in ``send_and_receive``. A round whose nodes answer in half a second
still takes 3 s, so on a small federation that sleep is most of a run: the default
80-round preset spent about 2 s a round waiting (docs/benchmarks.md, "Where a round's
time goes"). This wrapper pushes through the runtime's grid and pulls with a backoff
that starts at 50 ms and settles at 200 ms: a pull is one local request, and a 1 s cap
cost the 5-minute default run about half a second a round (rounds observed at 3.0, 4.0 and
5.0 s; docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

FIRST_POLL_S = 0.05
MAX_POLL_S = 0.2
BACKOFF = 1.5


class PollingGrid(Grid):
    """Delegate everything to ``grid``; wait for replies with a short, growing poll."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, then pull until every reply is in or ``timeout`` seconds have passed."""
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        wait = FIRST_POLL_S
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (end is not None and time.monotonic() >= end):
                break
            pause = wait if end is None else min(wait, max(0.0, end - time.monotonic()))
            time.sleep(pause)
            wait = min(MAX_POLL_S, wait * BACKOFF)
        return replies
