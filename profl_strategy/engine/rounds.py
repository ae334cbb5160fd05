"""One round as values: what was sent to whom (:class:`RoundPlan`) and what came back
(:class:`RoundOutcome`), and the screening that turns replies into the latter.

A reply reaches a global model only if it is exactly what its node was asked
for: the keys and shapes of its order's sub-model, finite values and a positive
example count. Everything else is counted and logged with the node id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.common import log

from profl_strategy.engine.merge import Index, Update
from profl_strategy.engine.nodes import NodeBook
from profl_strategy.engine.protocol import ARRAYS, NUM_EXAMPLES, Order, Refused, Trained, read_reply
from profl_strategy.engine.round_failures import NodeErrors, log_repeats

Shapes = dict[str, tuple[int, ...]]


@dataclass
class Assignment:
    """One node's order this round, the arrays sent with it, and what its reply must be.

    ``shapes`` are the keys and shapes the reply must hold; ``where`` places the
    reply's arrays in the global state for the merge (None: same keys, whole);
    ``note`` goes into the round log's ``selected_nodes`` entry.
    """

    node: int
    order: Order
    arrays: ArrayRecord
    shapes: Shapes
    where: Mapping[str, tuple[str, Index]] | None = None
    note: dict[str, Any] = field(default_factory=dict)


@dataclass
class RoundPlan:
    """What a round sends to whom; ``note`` holds the method's own log fields."""

    server_round: int
    online: int
    eligible: int
    need_mb: float
    assignments: list[Assignment]
    nodes: NodeBook
    note: dict[str, Any] = field(default_factory=dict)
    sent: list[Message] = field(default_factory=list)

    def messages(self, ttl: float) -> list[Message]:
        """One message per assignment; unanswered after ``ttl`` s the SuperLink drops it."""
        self.sent = [a.order.message(a.arrays, a.node, ttl) for a in self.assignments]
        return self.sent

    def assignment_of(self, reply: Message) -> tuple[int, Assignment | None]:
        """The node a reply is about (also for errors the SuperLink wrote) and its order."""
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in self.sent}
        node = dst.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        return node, next((a for a in self.assignments if a.node == node), None)

    def log(self) -> dict[str, Any]:
        """The round log's fields about what was sent."""
        return {
            "eligible": self.eligible,
            "selected": len(self.assignments),
            "online": self.online,
            "need_mb": self.need_mb,
            "bytes_down": sum(a.arrays.count_bytes() for a in self.assignments),
            "selected_nodes": [
                {
                    "node": a.node,
                    "partition": self.nodes.partition_ids.get(a.node, -1),
                    "budget_mb": self.nodes.budgets.get(a.node),
                    **a.note,
                }
                for a in self.assignments
            ],
        } | self.note


@dataclass
class Returned:
    """A usable reply: its node, what the node was sent, and what it trained."""

    node: int
    assignment: Assignment
    trained: Trained
    content: RecordDict


@dataclass
class RoundOutcome:
    """What came back in a round: usable replies (node order) and the rest, counted.

    ``failed`` are error replies (the ClientApp raised, or the SuperLink answered for a
    node whose reply never came); ``rejected`` are replies whose content cannot be merged.
    """

    good: list[Returned] = field(default_factory=list)
    replies: int = 0
    refused: int = 0
    failed: int = 0
    rejected: int = 0
    # nodes whose guard stopped the order at a measured peak over their budget
    overruns: list[tuple[int, Assignment]] = field(default_factory=list)

    def updates(self, rows: Mapping[int, Mapping[str, np.ndarray]] | None = None) -> list[Update]:
        """The merge's input; ``rows`` (per node) restricts keys to some rows."""
        return [
            Update(
                {k: a.numpy() for k, a in r.content.array_records[ARRAYS].items()},
                float(r.trained.num_examples),
                r.assignment.where,
                (rows or {}).get(r.node),
            )
            for r in self.good
        ]

    def train_loss(self) -> float:
        """Example-weighted mean training loss of the usable replies."""
        pairs = [(r.trained.train_loss, float(r.trained.num_examples)) for r in self.good]
        return sum(v * n for v, n in pairs) / sum(n for _, n in pairs)

    def log(self) -> dict[str, Any]:
        """The round log's fields about the replies."""
        plans = Counter(r.trained.plan for r in self.good if r.trained.plan is not None)
        record = {
            "refused": self.refused,
            "failed": self.failed,
            "rejected": self.rejected,
            "replies": self.replies,
            "bytes_up": sum(r.content.array_records[ARRAYS].count_bytes() for r in self.good),
            "peak_mb_measured": max((r.trained.peak_mb_measured for r in self.good), default=0.0),
            "measured_nodes": {
                str(r.node): {
                    "measured_mb": round(r.trained.peak_mb_measured, 2),
                    "predicted_mb": round(r.trained.call_predicted_mb, 2),
                    "budget_mb": round(r.trained.call_budget_mb, 2),
                    "policy": r.trained.memory_policy,
                }
                for r in self.good
            },
            "overruns": len(self.overruns),
            "aggregated": len(self.good),
            "plans_used": dict(plans),
        }
        return record


def problem(reply: Message, answer: object, sent: Assignment | None) -> str | None:
    """Why a train reply without an error cannot be merged, or None."""
    if sent is None:
        return "reply from a node that was sent nothing this round"
    if not isinstance(answer, Trained):
        kind = getattr(answer, "kind", None)
        return f"a '{kind}' reply, not a trained sub-model" if kind else "no readable reply"
    return array_problem(reply.content, sent.shapes, answer.num_examples)


def array_problem(content: RecordDict, shapes: Shapes, examples: float) -> str | None:
    """Why a reply's arrays are not the expected keys and shapes of finite values, or None."""
    if ARRAYS not in content.array_records:
        return "no arrays"
    arrays = content.array_records[ARRAYS]
    if sorted(arrays.keys()) != sorted(shapes):
        extra = sorted(set(arrays.keys()) - set(shapes))
        missing = sorted(set(shapes) - set(arrays.keys()))
        return (
            "arrays for other keys than the order's trainable ones "
            f"(unexpected: {extra[:3]}, missing: {missing[:3]})"
        )
    for key, array in arrays.items():
        value = array.numpy()
        if tuple(value.shape) != tuple(shapes[key]):
            return f"shape of {key} is {value.shape}, expected {tuple(shapes[key])}"
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return f"non-finite values in {key}"
    if not examples > 0:
        return f"{NUM_EXAMPLES} is not positive"
    return None


def warn_over(node: int, trained: Trained, errors: NodeErrors) -> None:
    """Log a warning naming the node if its measured peak passed its budget or the
    prediction (whole-call figures).

    A strict node is warned about on every call. A node on the fast allocator policy
    (simulated budgets) keeps freed heap, which the model does not predict: it is
    warned about once, with how to hold it (``results.json`` counts every call).
    """
    peak, budget, predicted = (trained.peak_mb_measured, trained.call_budget_mb,
                               trained.call_predicted_mb)  # fmt: skip
    if not budget or peak <= min(budget, predicted):
        return
    strict = trained.memory_policy == "strict"
    if not strict and not errors.first_overrun(node):
        return
    what = (f"over its budget of {budget:.1f} MB (predicted {predicted:.1f} MB)" if peak > budget
            else f"over the predicted {predicted:.1f} MB (budget {budget:.1f} MB)")  # fmt: skip
    hint = "" if strict else (
        "; fast allocator policy, not held to the model: memory-guard=true in the node "
        "config (PROFL_MEMORY_GUARD=1 in a simulation) holds it; later overruns are only counted"
    )  # fmt: skip
    log(WARNING, "node %s: measured peak %.1f MB is %s%s", node, peak, what, hint)


def screen(
    plan: RoundPlan, replies: Iterable[Message], nodes: NodeBook, errors: NodeErrors | None = None
) -> RoundOutcome:
    """Sort a round's replies into usable ones (in node order) and counted failures.

    Error replies are logged through ``errors`` (the run's), each distinct error once.
    """
    errors = errors if errors is not None else NodeErrors()
    outcome, repeats = RoundOutcome(), []
    for reply in replies:
        outcome.replies += 1
        node, sent = plan.assignment_of(reply)
        if reply.has_error():
            outcome.failed += 1
            if not errors.add(plan.server_round, node, reply.error.reason or "no reason given"):
                repeats.append(node)
            continue
        answer = read_reply(reply.content) if reply.has_content() else None
        nodes.refresh(node, answer)
        if isinstance(answer, Refused):
            outcome.refused += 1
            log(WARNING, "node %s refused: needs %.1f MB, budget %.1f MB (%s)",
                node, answer.need_mb, answer.memory_mb, answer.reason)  # fmt: skip
            if answer.measured_mb > 0 and sent is not None:
                outcome.overruns.append((node, sent))
            continue
        why = problem(reply, answer, sent)
        if why:
            outcome.rejected += 1
            log(WARNING, "reply of node %s rejected: %s", node, why)
            continue
        assert sent is not None and isinstance(answer, Trained)
        warn_over(node, answer, errors)
        outcome.good.append(Returned(node, sent, answer, reply.content))
    log_repeats(plan.server_round, repeats)
    # Sum in a fixed order: float addition is not associative, replies come in any order.
    outcome.good.sort(key=lambda r: nodes.order(r.node))
    return outcome
