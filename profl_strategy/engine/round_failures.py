"""Rounds in which no reply could be used: their errors shown once, and when to stop.

One bad setting (a partition the library cannot make, a missing ``data-dir``) fails
every node the same way, in every round. Each distinct error is logged once, in
full (:class:`NodeErrors`), and later copies are counted on one line a round. After
:data:`STOP_AFTER_FAILED_ROUNDS` rounds in a row that sent orders and got no usable
reply back the run stops (:func:`stop_reason`): the global model has not changed
since, and would not. A round with some usable replies breaks the streak, even if
they were too few to merge (``min-replies``), and so does a round that sent nothing.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from logging import ERROR, WARNING
from typing import Any

from flwr.common import log
from flwr.common.logger import FLOWER_LOGGER

# Rounds in a row with orders sent and no usable reply after which the run stops: more
# than one (a node restarting, a round timeout that was too short), few enough to
# stop a run that cannot learn within minutes.
STOP_AFTER_FAILED_ROUNDS = 3
# Parts of an error text that differ between nodes failing the same way: the Ray
# worker's process id, address and actor id, object addresses.
_VOLATILE = re.compile(r"pid=\d+|ip=[\w.:]+|actor_id=\w+|0x[0-9a-fA-F]+")


def headline(reason: str) -> str:
    """An error's last line (the exception and its message, after any traceback)."""
    lines = [ln.strip() for ln in reason.strip().rstrip(">'\"").splitlines() if ln.strip()]
    return lines[-1] if lines else reason


class NodeErrors:
    """The run's error replies: each distinct error logged once, in full, then counted."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[int, int, str]] = {}  # key -> (round, node, error)
        self.counts: Counter[str] = Counter()
        self.overran: set[int] = set()  # nodes already warned about a measured overrun

    def first_overrun(self, node: int) -> bool:
        """Whether this is the first measured overrun of ``node`` (then remember it)."""
        first = node not in self.overran
        self.overran.add(node)
        return first

    def add(self, server_round: int, node: int, reason: str) -> bool:
        """Count one error reply; log it if no node has sent that error before."""
        key = _VOLATILE.sub("", reason)
        self.counts[key] += 1
        if key in self.first:
            return False
        self.first[key] = (server_round, node, reason)
        log(WARNING, "reply of node %s failed: error reply: %s", node, reason)
        return True

    def describe(self) -> str:
        """Every distinct error, the most frequent first: its headline, count and origin."""
        return "; ".join(
            f"{headline(self.first[key][2])} ({n}x, first from node {self.first[key][1]} "
            f"in round {self.first[key][0]})"
            for key, n in self.counts.most_common()
        )


class RepeatFilter(logging.Filter):
    """Drops an error record whose text (less :data:`_VOLATILE`) was logged before."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < ERROR:
            return True
        key = _VOLATILE.sub("", record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextmanager
def errors_once(logger: logging.Logger = FLOWER_LOGGER) -> Iterator[RepeatFilter]:
    """Log each distinct error record of ``logger`` once while in the block.

    In a simulation Flower logs every failed ClientApp call itself, at ERROR, with two
    tracebacks (``vce_api``), in the ServerApp's process: 20 failing nodes, 20 copies.
    """
    repeats = RepeatFilter()
    logger.addFilter(repeats)
    try:
        yield repeats
    finally:
        logger.removeFilter(repeats)


def log_repeats(server_round: int, nodes: Sequence[int]) -> None:
    """One line for a round's error replies that repeat an error shown before."""
    if nodes:
        shown = ", ".join(map(str, nodes[:10])) + (", ..." if len(nodes) > 10 else "")
        log(WARNING, "round %d: %d error replies repeat an error shown above (nodes %s)",
            server_round, len(nodes), shown)  # fmt: skip


def failed_streak(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last rounds in a row that sent orders and got no usable reply back."""
    streak: list[dict[str, Any]] = []
    for record in reversed(history):
        if not record.get("selected") or record.get("aggregated", 0) > 0:
            break
        streak.append(record)
    return streak[::-1]


def stop_reason(history: Sequence[dict[str, Any]], errors: NodeErrors) -> str | None:
    """Why the run must stop now (None: it goes on); for the log and ``results.json``."""
    streak = failed_streak(history)
    if len(streak) < STOP_AFTER_FAILED_ROUNDS:
        return None
    total = {k: sum(int(r.get(k, 0)) for r in streak) for k in ("failed", "rejected", "refused")}
    missing = sum(int(r["selected"]) - int(r.get("replies", 0)) for r in streak)
    what = ", ".join(f"{n} {k}" for k, n in (*total.items(), ("missing", missing)) if n)
    text = (
        f"no reply could be used in {len(streak)} rounds in a row (rounds "
        f"{streak[0]['round']}-{streak[-1]['round']}: {what}), so the model cannot learn"
    )
    if total["failed"]:
        text += f". The nodes' errors: {errors.describe()}"
    return text
