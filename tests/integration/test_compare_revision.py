"""The comparison's manifest records the commit each run ran at, from a real git checkout."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.accuracy import runner
from benchmarks.accuracy.tables import by_method, load_runs, write_tables
from benchmarks.common.revision import revision
from tests.support.reports import fake_run


def git(repo: Path, *args: str) -> str:
    """``git args`` in ``repo`` with a throwaway identity; its stdout."""
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run([*cmd, *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def checkout(path: Path) -> Path:
    """A git checkout holding one committed file, ``app.py``."""
    path.mkdir()
    git(path, "init", "-q")
    (path / "app.py").write_text("x = 1\n")
    git(path, "add", "app.py")
    git(path, "commit", "-qm", "one")
    return path


def test_revision_outside_a_checkout_says_why(tmp_path: Path) -> None:
    found = revision(tmp_path)
    assert found["commit"] is None and found["dirty"] is None
    assert str(tmp_path) in found["revision_error"]


def test_manifest_records_the_commit_and_the_table_says_when_runs_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invocations into one folder: clean at commit A (new results in the checkout do not
    count), with a local change at A, then at commit B. Each run keeps the commit it ran at;
    the table says when its runs differ."""
    app, out = checkout(tmp_path / "app"), tmp_path / "out"
    asked: list[Path] = []
    real = runner.revision
    monkeypatch.setattr(runner, "revision", lambda src, skip: asked.append(src) or real(src, skip))
    monkeypatch.setattr(runner, "check_app", lambda app, methods: None)

    def run_one(spec: runner.RunSpec, cfg: runner.Settings, *args: object) -> None:
        fake_run(spec.out.parent.parent, spec.method, [0.5, 0.6], 8.0, 5.0, seed=spec.seed)
        spec.status = "ok"

    monkeypatch.setattr(runner, "run_one", run_one)

    def compare(seeds: list[int]) -> dict:
        cfg = runner.Settings("laptop", "", 2, "", 60.0, "")
        cfg.runs = [runner.RunSpec("profl", s, out / "runs" / f"profl-s{s}") for s in seeds]
        runner.run_all(cfg, out, app, ["compare.py"])
        return json.loads((out / "manifest.json").read_text())

    def table_head() -> str:
        rows = load_runs(out)
        write_tables(out, rows, by_method(rows, ["profl"]))
        return (out / "table.md").read_text().split("| method |")[0]

    first = git(app, "rev-parse", "HEAD")
    manifest = compare([0])
    assert len(asked) == 1  # once per invocation
    assert (manifest["commit"], manifest["dirty"]) == (first, False)
    fake_run(app / "benchmarks" / "results" / "other", "fedavg", [0.1], 1.0, 1.0)  # untracked
    manifest = compare([1, 2])
    assert len(asked) == 2  # once per invocation, not per run
    assert [(r["commit"], r["dirty"]) for r in manifest["runs"]] == [(first, False)] * 3
    assert table_head() == ""  # one commit, no changes: nothing to say

    (app / "app.py").write_text("x = 2\n")
    assert compare([3])["dirty"] is True
    head = table_head()
    assert "**Uncommitted changes** in the checkout of profl-s3:" in head
    assert "code versions" not in head

    git(app, "commit", "-qam", "two")
    second = git(app, "rev-parse", "HEAD")
    manifest = compare([4])
    runs = {r["seed"]: (r["commit"], r["dirty"]) for r in manifest["runs"]}
    assert runs == {**dict.fromkeys(range(3), (first, False)), 3: (first, True), 4: (second, False)}
    head = table_head()
    assert f"**Runs from 2 code versions**: {first[:7]} (profl-s0, profl-s1, profl-s2, " in head
    assert f"{second[:7]} (profl-s4)." in head
