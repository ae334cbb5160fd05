"""Report a comparison: tables, plots and a README section from its ``results.json`` files.

Reads every finished run under ``<out>/runs/<method>-s<seed>/<run>/results.json`` (a run
without a ``summary`` is still going or died, and is left out) and writes to ``out``::

    runs.csv                one row per run
    table.csv, table.md     one row per method (mean and std over seeds); table.md's
                            footnote says what every column and plot shows
    accuracy.png            accuracy per round: mean over seeds, band min-max over seeds
    accuracy_compute.png    the same against cumulative client updates and round time
    accuracy_bytes.png      the same against cumulative MB sent down and up (log x)
    memory.png              worst per-client training peak (estimated; CUDA where measured)
    participation.png       eligible and trained share of the nodes

:func:`update_readme` copies the table, figures and commands into a README section.
Nothing here runs Flower; :mod:`benchmarks.accuracy.runner` does.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.accuracy.plots import write_plots
from benchmarks.accuracy.tables import PLOTS, by_method, load_runs, write_tables


def report(out: Path, order: Sequence[str]) -> list[dict[str, Any]]:
    """Tables and plots from every finished run under ``out``."""
    rows = load_runs(out)
    if not rows:
        print(f"no finished runs under {out}/runs", flush=True)
        return []
    table = by_method(rows, order)
    write_tables(out, rows, table)
    write_plots(out, rows, table)
    print((out / "table.md").read_text(), flush=True)
    return table


def update_readme(readme: Path, out: Path) -> bool:
    """Put ``out``'s table, figures and commands between the README's markers for ``out``.

    The markers are ``<!-- compare:<folder name> -->`` and ``<!-- /compare:<folder name> -->``;
    a README without them is left alone (False).
    """
    start, end = f"<!-- compare:{out.name} -->", f"<!-- /compare:{out.name} -->"
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    rel = os.path.relpath(out, readme.parent)
    manifest = json.loads((out / "manifest.json").read_text())
    commands = [
        "python -m benchmarks.accuracy.compare " + " ".join(shlex.quote(a) for a in argv[1:])
        for argv in manifest.get("commands", [])
    ]
    body = "\n".join(
        [
            start,
            "```bash",
            *commands,
            "```",
            "",
            (out / "table.md").read_text().strip(),
            "",
            *(f"![{alt}]({rel}/{name})" for name, alt, _ in PLOTS),
            end,
        ]
    )
    head, rest = text.split(start, 1)
    readme.write_text(head + body + rest.split(end, 1)[1])
    return True
