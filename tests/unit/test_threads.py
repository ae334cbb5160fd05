"""Torch threads per ClientApp: what Ray gives an actor, OMP_NUM_THREADS, or the usable CPUs."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, Message, RecordDict

from client_app import mods


def test_thread_count_follows_omp_num_threads_else_the_usable_cpus(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert mods.torch_threads() == (1, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, why = mods.torch_threads()
    assert threads == mods.usable_cpus() >= 1 and why == "usable CPUs"


@pytest.mark.usefixtures("task_identity")
def test_pin_threads_sets_torch_before_the_handler_runs(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(mods, "torch_threads", lambda: (1, "test"))
    seen: list[int] = []

    def handler(msg: Message, context: Context) -> Message:
        seen.append(torch.get_num_threads())
        return msg

    try:
        mods.pin_threads(Message(RecordDict(), dst_node_id=1, message_type="query"), None, handler)
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def test_profl_torch_threads_is_an_explicit_choice_that_wins(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PROFL_TORCH_THREADS", "3")
    assert mods.torch_threads() == (3, "PROFL_TORCH_THREADS")
    monkeypatch.setenv("PROFL_TORCH_THREADS", "many")  # not a number: ignored
    assert mods.torch_threads() == (1, "OMP_NUM_THREADS")
