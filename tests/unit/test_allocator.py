"""``benchmarks.accuracy.compare --allocator``: which malloc the runs get (runs: integration)."""

from __future__ import annotations

import ctypes.util

import pytest

from benchmarks.speed import allocator


def installed(monkeypatch: pytest.MonkeyPatch, libs: dict[str, str]) -> None:
    """Pretend only ``libs`` (find_library name -> file) are installed."""
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: libs.get(name))


def test_auto_takes_the_first_installed_else_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, {"jemalloc": "libjemalloc.so.2"})
    assert allocator.resolve("auto") == ("jemalloc", "libjemalloc.so.2")
    installed(monkeypatch, {"jemalloc": "libjemalloc.so.2", "tcmalloc_minimal": "libtc.so.4"})
    assert allocator.resolve("auto") == ("tcmalloc", "libtc.so.4")
    installed(monkeypatch, {})
    assert allocator.resolve("auto") == ("system", None)
    assert allocator.resolve("system") == ("system", None)
    assert allocator.preload_env(None) == {}


def test_a_named_allocator_that_is_missing_stops_with_its_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, {})
    with pytest.raises(SystemExit, match="apt install libtcmalloc-minimal4"):
        allocator.resolve("tcmalloc")
    with pytest.raises(SystemExit, match="'mimalloc' is not one of auto, system, tcmalloc"):
        allocator.resolve("mimalloc")


def test_preload_goes_in_front_of_an_existing_preload() -> None:
    env = allocator.preload_env("libtc.so.4", {"LD_PRELOAD": "libother.so"})
    assert env == {"LD_PRELOAD": "libtc.so.4 libother.so"}
    assert allocator.preload_env("libtc.so.4", {}) == {"LD_PRELOAD": "libtc.so.4"}
