"""Flower's task identity outside Flower's runtime.

Flower's ``Message`` needs the identity of the task that builds it; Flower's runtime sets
it, a test (or a test's child process) must set it itself. The values are those of
:class:`server_app.inprocess.InProcessGrid`: run 1's ServerApp (node 0), task 1.
"""

from __future__ import annotations

from flwr.supercore.task_identity import TaskIdentity

SERVER_TASK = {"run_id": 1, "node_id": 0, "task_id": 1}


def set_task_identity(run_id: int = 1, node_id: int = 0, task_id: int = 1) -> None:
    """Say which task builds messages in this process (by default: run 1's ServerApp)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
