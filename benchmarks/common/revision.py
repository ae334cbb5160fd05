"""Which code a comparison ran: the app's commit, and whether its checkout had changes.

A results folder can be filled by several invocations at different commits (a variant added
later, a queue resumed after a fix), so a table over its runs can mix code versions. Every
``manifest.json`` therefore records, for the invocation and for each of its runs, the commit
of the app the runs' snapshot was copied from (``git rev-parse HEAD``) and whether that
checkout differed from it (``git status --porcelain``, leaving out what the snapshot leaves
out, such as ``benchmarks/results``). Outside a git checkout both are ``None`` and
``revision_error`` says why. :func:`table_note` is the line that heads ``table.md`` when the
runs of a table ran at more than one commit or on a changed checkout.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SHORT = 7  # characters of a commit in table.md, as git log --oneline shows it


def revision(source: Path, skipped: Sequence[str] = ()) -> dict[str, Any]:
    """``commit`` and ``dirty`` of the checkout at ``source`` (both ``None`` outside one).

    ``skipped``: name patterns the snapshot does not copy (``runner.SNAPSHOT_SKIPS``);
    changes under them do not make the checkout dirty.
    """
    excluded = [f":(exclude,glob)**/{p}{tail}" for p in skipped for tail in ("", "/**")]
    try:
        commit = _git(source, "rev-parse", "HEAD")
        changes = _git(source, "status", "--porcelain", "--", ".", *excluded)
    except (OSError, subprocess.SubprocessError) as e:  # no git, not a checkout, a hang
        stderr = getattr(e, "stderr", None)
        detail = stderr if isinstance(stderr, str) and stderr.strip() else str(e)
        return {
            "commit": None,
            "dirty": None,
            "revision_error": f"no git commit for {source}: {detail.strip()}",
        }
    return {"commit": commit, "dirty": bool(changes)}


def _git(cwd: Path, *args: str) -> str:
    """stdout of ``git args`` in ``cwd``; raises if git is missing or fails."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def recorded(out: Path) -> dict[str, dict[str, Any]]:
    """``<method>-s<seed>``: the commit and dirty flag its manifest records, for ``out``.

    Reads ``out/manifests/*.json`` (the manifests of folders merged into ``out``), then
    ``manifest_*.json``, then ``manifest.json``; a later record of a run wins.
    """
    paths = [*sorted(out.glob("manifests/*.json")), *sorted(out.glob("manifest_*.json"))]
    found: dict[str, dict[str, Any]] = {}
    for path in [*paths, out / "manifest.json"]:
        runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
        for run in runs:
            found[f"{run['method']}-s{run['seed']}"] = run
    return found


def table_note(out: Path, names: Sequence[str]) -> str:
    """A line for the top of ``table.md`` if runs ``names`` of ``out`` ran at different
    commits or on a changed checkout; ``""`` if they agree or nothing was recorded."""
    runs = recorded(out)
    by_commit: dict[str | None, list[str]] = {}
    for name in names:
        by_commit.setdefault(runs.get(name, {}).get("commit"), []).append(name)
    dirty = [n for n in names if runs.get(n, {}).get("dirty")]
    lines = []
    if len(by_commit) > 1:
        groups = [
            f"{commit[:SHORT] if commit else 'commit not recorded'} ({', '.join(group)})"
            for commit, group in by_commit.items()
        ]
        lines.append(
            f"> **Runs from {len(by_commit)} code versions**: {'; '.join(groups)}. "
            "Rows can differ by the code as well as by method and seed."
        )
    if dirty:
        lines.append(
            f"> **Uncommitted changes** in the checkout of {', '.join(dirty)}: "
            "their commit alone does not give the code they ran."
        )
    return "\n>\n".join(lines) + "\n\n" if lines else ""
