"""What the server knows about the nodes: budgets, partitions, and who is left out.

Budgets come from the nodes themselves (a ``query.budget`` answered by the
ClientApp), so a deployed node states its own ``memory-mb``. A node whose answer
gives no usable budget is logged once and left out; it is asked again after
:data:`REASK_LEFT_OUT_ROUNDS` rounds or when it reconnects.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import Message
from flwr.common import log
from flwr.serverapp import Grid

from profl_strategy.engine.protocol import Budget, BudgetQuery, ConfigProblem, RunSpec, read_reply

REASK_LEFT_OUT_ROUNDS = 10  # a node left out for want of a budget is asked again after this


def mb_text(value: float) -> str:
    """A budget for the log: two decimals at most, no trailing zeros (3, 9.5, 7.25)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") else f"{value:.2g}"


class NodeBook:
    """Budgets (MB), their sources and partition ids of the nodes, by node id."""

    def __init__(self, run: RunSpec) -> None:
        self.run = run
        self.budgets: dict[int, float] = {}
        self.sources: dict[int, str] = {}
        self.partition_ids: dict[int, int] = {}
        self.devices: dict[int, str] = {}  # "cpu" or "cuda": where the node trains
        # node -> (round asked, why): nodes without a usable budget (bad node-config,
        # failed budget query), not selected and not asked every round
        self.left_out: dict[int, tuple[int, str]] = {}
        self._online_before: set[int] | None = None

    def order(self, node: int) -> tuple[int, int]:
        """Stable node order (partition id first), so a seed fixes selection and sums."""
        return self.partition_ids.get(node, -1), node

    def to_ask(self, online: list[int], server_round: int) -> list[int]:
        """Online nodes without a budget, back from offline, or due to be asked again."""
        back = set(online) - self._online_before if self._online_before is not None else set()
        self._online_before = set(online)
        out = self.left_out
        return [
            n
            for n in online
            if n in back
            or (n not in self.budgets and n not in out)
            or (n in out and server_round - out[n][0] >= REASK_LEFT_OUT_ROUNDS)
        ]

    def discover(self, grid: Grid, server_round: int, timeout: float) -> None:
        """Ask online nodes the book has no budget for (or that reconnected) for one.

        A node that went offline and came back is asked again, as it may have
        restarted with another ``memory-mb``.
        """
        online = list(grid.get_node_ids())
        ask = self.to_ask(online, server_round)
        if not ask:
            return
        for n in ask:  # the next question in REASK_LEFT_OUT_ROUNDS, answered or not
            if n in self.left_out:
                self.left_out[n] = (server_round, self.left_out[n][1])
        query = BudgetQuery(self.run)
        msgs = [query.message(n, server_round, timeout) for n in ask]
        # An error the SuperLink wrote (node gone) does not come from the node itself.
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            node = dst.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            self.take(node, reply, server_round)
        log(INFO, "budgets known for %s", self.summary(online))

    def take(self, node: int, reply: Message, server_round: int) -> None:
        """Record the budget a reply states, or leave the node out with the reason."""
        answer = None if reply.has_error() else read_reply(reply.content)
        why = self.problem(reply, answer)
        if why:
            self.leave_out(node, server_round, why)
            return
        assert isinstance(answer, Budget)
        if self.left_out.pop(node, None):
            log(INFO, "node %s now states a usable budget and joins the run", node)
        self.budgets[node] = answer.memory_mb
        self.partition_ids[node] = answer.partition_id
        self.devices[node] = answer.device
        if answer.source.startswith("auto") and self.sources.get(node) != answer.source:
            log(INFO, "node %s: budget %.1f MB from the device (%s; idle ClientApp %.0f MB)",
                node, answer.memory_mb, answer.source, answer.idle_mb)  # fmt: skip
        self.sources[node] = answer.source

    @staticmethod
    def problem(reply: Message, answer: object) -> str | None:
        """Why a budget reply gives no usable budget (the node's own words if it says)."""
        if reply.has_error():
            return f"budget query failed: {reply.error.reason}"
        if isinstance(answer, ConfigProblem):
            return answer.config_error
        mb = answer.memory_mb if isinstance(answer, Budget) else None
        if mb is None or not math.isfinite(mb):
            return (
                f"its budget reply has memory-mb={mb!r}, not a finite number of MB; "
                "check the node's --node-config memory-mb"
            )
        return None

    def leave_out(self, node: int, server_round: int, why: str) -> None:
        """Leave a node without a usable budget out; log why once, not every time it is asked."""
        self.budgets.pop(node, None)
        if self.left_out.get(node, (0, ""))[1] != why:
            log(
                WARNING,
                "node %s is left out of the run (asked again in %d rounds or when it "
                "reconnects): %s",
                node,
                REASK_LEFT_OUT_ROUNDS,
                why,
            )
        self.left_out[node] = (server_round, why)

    def refresh(self, node: int, answer: object) -> None:
        """Take the budget a train reply states: a node may restart with another budget."""
        mb = getattr(answer, "memory_mb", None)
        if isinstance(mb, int | float) and math.isfinite(mb) and mb > 0 and node in self.budgets:
            self.budgets[node] = float(mb)

    def summary(self, online: Iterable[int] | None = None) -> str:
        """``N online nodes: budgets in MB, smallest first``, and how many are offline or out.

        Only nodes in ``online`` (all known nodes when None) are counted and
        listed; budgets keep two decimals (9.5 stays 9.5), repeats are counted.
        """
        now = set(self.budgets if online is None else online)
        counts = Counter(b for n, b in self.budgets.items() if n in now)
        listed = ", ".join(
            f"{mb_text(b)}" + (f" (x{c})" if c > 1 else "") for b, c in sorted(counts.items())
        )
        text = f"{sum(counts.values())} online nodes: {listed or 'none'} MB"
        offline = sum(n not in now for n in self.budgets)
        refused = sum(n in now for n in self.left_out)
        if offline:
            text += f"; {offline} offline, not counted"
        if refused:
            text += f"; {refused} left out (no usable budget)"
        return text
