"""The engine runs every method and imports none of them (issue 38).

A method subclasses :class:`~profl_strategy.engine.engine.Engine` and hands it a
:class:`~profl_strategy.engine.method.Schedule`; the engine must not reach back
into :mod:`profl_strategy.methods` (nor into :mod:`profl_strategy.run`, which
builds methods), so a new method never has to touch the engine. Checked on the
source (every import statement, lazy ones included) and in a fresh interpreter
(what importing the engine pulls in transitively).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO as ROOT

ENGINE = ROOT / "profl_strategy" / "engine"
FORBIDDEN = ("profl_strategy.methods", "profl_strategy.run")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_engine_sources_import_no_method() -> None:
    bad = {
        f"{path.name}: {module}"
        for path in sorted(ENGINE.glob("*.py"))
        for module in imported_modules(path)
        if module.startswith(FORBIDDEN) or module == "profl_strategy"
    }
    assert not bad, f"the engine imports a method or the run layer: {sorted(bad)}"


@pytest.mark.slow
def test_importing_the_engine_loads_no_method() -> None:
    modules = [f"profl_strategy.engine.{p.stem}" for p in sorted(ENGINE.glob("*.py"))]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = [m for m in json.loads(out.stdout) if m.startswith(FORBIDDEN)]
    assert loaded == [], f"importing the engine loads {loaded}"


def test_checkpoints_from_before_the_layout_still_load() -> None:
    """A ProFL checkpoint pickles its current ``Step`` under the module it had then."""
    import io
    import pickle

    from profl_strategy.engine import checkpoint
    from profl_strategy.engine.step import Step

    old = pickle.dumps(Step(2, 1), protocol=0).replace(
        b"profl_strategy.engine.step", b"profl_strategy.step_model"
    )
    assert b"profl_strategy.step_model" in old
    assert checkpoint._Unpickler(io.BytesIO(old)).load() == Step(2, 1)
    # the config hash reads class paths as they were spelled before the layout
    new = {"method": {"strategy": "profl_strategy.methods.profl.strategy.ProFL"}}
    was = {"method": {"strategy": "profl_strategy.strategy.ProFL"}}
    assert checkpoint.fingerprint(new) == checkpoint.fingerprint(was)
