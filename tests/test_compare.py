"""The comparison report: table, plots and the README section, from results.json files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks.accuracy import runner
from benchmarks.accuracy.compare import main
from benchmarks.accuracy.plots import band
from benchmarks.accuracy.report import report, update_readme
from benchmarks.accuracy.tables import PLOTS, by_method, curve, load_runs, write_tables
from benchmarks.common.revision import revision


def fake_run(
    out: Path,
    method: str,
    accs: list[float],
    need: float,
    plan_need: float,
    cuda: list[float] | None = None,
    seed: int = 0,
) -> None:
    rounds = [
        {
            "round": i + 1,
            "accuracy": a,
            "need_mb": need,
            "selected": 2,
            "aggregated": 2,
            "eligible": 10,
            "online": 20,
            "bytes_down": 2**20,
            "bytes_up": 2**19,
            "round_s": 1.0,
            "peak_mb_measured": (cuda or [0.0] * len(accs))[i],
            "selected_nodes": [
                {"partition": i % 20, "plan_need_mb": plan_need},
                {"partition": (i + 1) % 20, "plan_need_mb": plan_need / 2},
            ],
        }
        for i, a in enumerate(accs)
    ]
    summary = {"final_accuracy": accs[-1], "rounds": len(accs), "full_model_peak_mb_est": 20.0}
    folder = out / "runs" / f"{method}-s{seed}" / "run"
    folder.mkdir(parents=True)
    data = {"rounds": rounds, "summary": summary, "wall_s": 12.0}
    (folder / "results.json").write_text(json.dumps(data))


def test_report_and_readme_section(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "profl", [0.2, 0.5, 0.6], need=8.0, plan_need=5.0)
    fake_run(out, "profl", [0.4, 0.5, 0.8], need=8.0, plan_need=5.0, seed=1)
    fake_run(out, "fedavg", [0.3, 0.4, 0.7], need=20.0, plan_need=20.0, cuda=[0.0, 30.5, 29.0])
    (out / "manifest.json").write_text(
        json.dumps({"commands": [["compare.py", "--methods", "profl,fedavg"]]})
    )
    table = report(out, ["profl", "fedavg"])
    assert [e["method"] for e in table] == ["profl", "fedavg"]
    assert table[0]["seeds"] == 2
    assert table[0]["peak_mb_est"] == 5.0  # the plan's need, not the step's plain need
    assert table[1]["best_accuracy"] == 0.7
    assert table[1]["tail_accuracy"] == 0.7  # evaluations after 75% of 3 rounds: round 3
    assert table[0]["peak_mb_cuda"] != table[0]["peak_mb_cuda"]  # NaN: no CUDA client reported
    assert table[1]["peak_mb_cuda"] == 30.5  # the largest a CUDA client reported
    plots = [name for name, _, _ in PLOTS]
    assert {"accuracy_compute.png", "accuracy_bytes.png", "memory.png"} <= set(plots)
    for name in ("table.md", "table.csv", "runs.csv", *plots):
        assert (out / name).stat().st_size > 0
        assert (out / name).read_bytes()[:4] == b"\x89PNG" or not name.endswith(".png")
    note = (out / "table.md").read_text()
    assert all(f"{name}:" in note for name in plots)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- compare:cmp -->\nold\n<!-- /compare:cmp -->\nend\n")
    assert update_readme(readme, out)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "python -m benchmarks.accuracy.compare --methods profl,fedavg" in text
    assert "| profl |" in text and all(f"(cmp/{name})" in text for name in plots)


def test_band_over_seeds_interpolates_and_stops_where_a_seed_stops() -> None:
    # seed 0 evaluated at x 1, 3, 4; seed 1 at 2, 3 only: common x is [2, 3]
    grid, mean, lo, hi = band([[1, 3, 4], [2, 3]], [[0.1, 0.3, 0.9], [0.5, 0.7]])
    assert grid.tolist() == [2.0, 3.0]
    assert np.allclose(mean, [0.35, 0.5]) and np.allclose(lo, [0.2, 0.3])
    assert np.allclose(hi, [0.5, 0.7])


def test_cli_report_only(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "fedavg", [0.3, 0.4, 0.7], need=20.0, plan_need=20.0)
    assert main(["--report-only", "--out", str(out), "--methods", "fedavg"]) == 0
    assert (out / "accuracy_bytes.png").exists() and (out / "table.csv").exists()
    assert main(["--report-only", "--out", str(tmp_path / "empty")]) == 1


def test_curve_is_cumulative_up_to_each_evaluation() -> None:
    rounds = [
        {"round": 1, "aggregated": 2, "round_s": 1.5, "bytes_down": 2**20, "bytes_up": 2**20},
        {"round": 2, "aggregated": 3, "round_s": 2.0, "bytes_down": 2**21, "bytes_up": 0,
         "accuracy": 0.4},
    ]  # fmt: skip
    assert curve(rounds) == {
        "round": [2.0],
        "updates": [5.0],
        "seconds": [3.5],
        "mb": [4.0],
        "accuracy": [0.4],
    }


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


def test_table_names_runs_whose_commit_was_not_recorded(tmp_path: Path) -> None:
    """A folder merged from older queues: their manifests (manifests/*.json) predate the
    commit; the table says which runs have none."""
    out = tmp_path / "cmp"
    for seed in (0, 1):
        fake_run(out, "fedavg", [0.3, 0.4], need=20.0, plan_need=20.0, seed=seed)
    (out / "manifests").mkdir()
    (out / "manifests" / "queue.json").write_text(
        json.dumps({"runs": [{"method": "fedavg", "seed": 0, "status": "ok"}]})
    )
    (out / "manifest.json").write_text(
        json.dumps({"runs": [{"method": "fedavg", "seed": 1, "commit": "c" * 40, "dirty": False}]})
    )
    rows = load_runs(out)
    write_tables(out, rows, by_method(rows, ["fedavg"]))
    text = (out / "table.md").read_text()
    assert text.startswith("> **Runs from 2 code versions**: commit not recorded (fedavg-s0); ")
    assert "cccccccc" not in text and "ccccccc (fedavg-s1)" in text
