"""Flower mods (ClientApp middleware) of this app."""

from __future__ import annotations

import time
from logging import WARNING

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log


def skip_expired(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Do not run a message whose TTL (the server's round timeout) has passed.

    The server stopped waiting for it and the SuperLink drops the reply, so
    training would only delay the next rounds' messages queued behind it: in
    simulation a slow round would otherwise leave a backlog that never drains.
    """
    md = msg.metadata
    late = time.time() - (md.created_at + md.ttl)
    if md.ttl and late > 0:
        log(
            WARNING,
            "%s of round %s expired %.0f s ago: not run",
            md.message_type,
            md.group_id,
            late,
        )
        return Message(RecordDict({"metrics": MetricRecord({"expired": 1})}), reply_to=msg)
    return call_next(msg, context)
