"""Fixtures every layer shares: the offline data, Flower's task identity, one torch thread.

The tests come in three layers, each a folder (``docs/development.md``):

- ``tests/unit``: one process, no Flower engine run, no subprocess; the layer runs in
  about a minute.
- ``tests/integration``: the real strategy and ClientApp over the in-process engine,
  ClientApp handlers and flwr-datasets' partitioners on real data, memory measured in
  fresh processes.
- ``tests/e2e``: ``flwr run`` simulations, a deployment with SuperLink and SuperNodes,
  the wheel and the FAB, a run killed and resumed.

Helpers that are not fixtures live in ``tests/support``; no test module imports another.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from flwr.supercore.task_identity import TaskIdentity

from tests.support.flower import SERVER_TASK, set_task_identity
from tests.support.paths import REPO, shared_data

LAYERS = ("unit", "integration", "e2e")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data (``../shared/data`` or ``$PROFL_DATA_DIR``); skips without it."""
    path = shared_data()
    if not (path / "FashionMNIST").is_dir():
        pytest.skip(f"offline data not found at {path}")
    return path


@pytest.fixture
def task_identity() -> Iterator[type[TaskIdentity]]:
    """Flower's task identity as the in-process engine sets it; the previous one after.

    Flower's runtime says which task builds a ``Message``; outside it, a test must.
    """
    before = {name: getattr(TaskIdentity, f"_{name}") for name in SERVER_TASK}
    set_task_identity(**SERVER_TASK)
    yield TaskIdentity
    for name, value in before.items():
        setattr(TaskIdentity, f"_{name}", value)


@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ``PROFL_CACHE_DIR`` for one test module: decoded data never lands in ``~``."""
    from profl_strategy.task import dataset

    folder = tmp_path_factory.mktemp("profl-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROFL_CACHE_DIR", str(folder))
        dataset.clear_caches()
        yield folder
        dataset.clear_caches()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on shared CPUs extra threads only spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test lives in a layer's folder (``tests/unit``, ``integration`` or ``e2e``)."""
    tests = REPO / "tests"
    stray = sorted(
        {str(item.path.relative_to(REPO)) for item in items if item.path.parent == tests}
    )
    if stray:
        raise pytest.UsageError(f"test files outside a layer ({', '.join(LAYERS)}): {stray}")
