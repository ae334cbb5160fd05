"""The comparison report: table, plots and the README section, from results.json files."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.compare import report, update_readme


def fake_run(
    out: Path,
    method: str,
    accs: list[float],
    need: float,
    plan_need: float,
    cuda: list[float] | None = None,
) -> None:
    rounds = [
        {
            "round": i + 1,
            "accuracy": a,
            "need_mb": need,
            "selected": 2,
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
    folder = out / "runs" / f"{method}-s0" / "run"
    folder.mkdir(parents=True)
    data = {"rounds": rounds, "summary": summary, "wall_s": 12.0}
    (folder / "results.json").write_text(json.dumps(data))


def test_report_and_readme_section(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    fake_run(out, "profl", [0.2, 0.5, 0.6], need=8.0, plan_need=5.0)
    fake_run(out, "fedavg", [0.3, 0.4, 0.7], need=20.0, plan_need=20.0, cuda=[0.0, 30.5, 29.0])
    (out / "manifest.json").write_text(
        json.dumps({"commands": [["compare.py", "--methods", "profl,fedavg"]]})
    )
    table = report(out, ["profl", "fedavg"])
    assert [e["method"] for e in table] == ["profl", "fedavg"]
    assert table[0]["peak_mb_est"] == 5.0  # the plan's need, not the step's plain need
    assert table[1]["best_accuracy"] == 0.7
    assert table[1]["tail_accuracy"] == 0.7  # evaluations after 75% of 3 rounds: round 3
    assert table[0]["peak_mb_cuda"] != table[0]["peak_mb_cuda"]  # NaN: no CUDA client reported
    assert table[1]["peak_mb_cuda"] == 30.5  # the largest a CUDA client reported
    for name in ("table.md", "table.csv", "runs.csv", "accuracy.png", "memory.png"):
        assert (out / name).stat().st_size > 0
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- compare:cmp -->\nold\n<!-- /compare:cmp -->\nend\n")
    assert update_readme(readme, out)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "python -m benchmarks.compare --methods profl,fedavg" in text
    assert "| profl |" in text and "(cmp/accuracy.png)" in text
