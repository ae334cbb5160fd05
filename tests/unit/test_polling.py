"""PollingGrid hands replies over as they arrive, not on Flower's 3 s poll."""

from __future__ import annotations

import time
from types import SimpleNamespace

from server_app.polling import PollingGrid


class SlowNodes:
    """Replies to message ``i`` become available ``delays[i]`` seconds after the push."""

    def __init__(self, delays: list[float]) -> None:
        self.delays, self.pulls, self.pushed = delays, 0, 0.0

    def push_messages(self, messages: list[str]) -> list[str]:
        self.pushed = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids: set[str]) -> list[SimpleNamespace]:
        self.pulls += 1
        now = time.monotonic() - self.pushed
        ready = [i for i in sorted(ids) if self.delays[int(i[1:])] <= now]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def test_replies_come_back_soon_after_they_arrive() -> None:
    nodes = SlowNodes([0.0, 0.2, 0.4])
    start = time.monotonic()
    replies = PollingGrid(nodes).send_and_receive(["a", "b", "c"], timeout=10)  # type: ignore[arg-type]
    took = time.monotonic() - start
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert took < 1.0  # Flower's HttpGrid: 3 s at least once a reply is late
    assert nodes.pulls < 15


def test_timeout_returns_what_came() -> None:
    nodes = SlowNodes([0.0, 60.0])
    start = time.monotonic()
    replies = PollingGrid(nodes).send_and_receive(["a", "b"], timeout=0.5)  # type: ignore[arg-type]
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.4 < time.monotonic() - start < 1.5
