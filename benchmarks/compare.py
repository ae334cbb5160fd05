"""Compare ProFL with its baselines: methods x seeds on one setting, then a table and plots.

Every (method, seed) is a real ``flwr run`` of this app (simulation, one private
``FLWR_HOME`` and private ports per run, no dependency installation), so all
methods share the models, partitions, memory profile, selection size, local
epochs and evaluation of the preset; only ``method=`` differs. A one-line
progress per round is printed while a run streams. Everything lands in
``--out``::

    runs/<method>-s<seed>/flwr.log        the run's streamed log
    runs/<method>-s<seed>/<run>/results.json
    table.md, table.csv                   one row per method (mean and std over seeds)
    runs.csv                              one row per run
    accuracy.png, memory.png, participation.png
    manifest.json                         command line, settings, status of every run

Example::

    python -m benchmarks.compare --preset cifar10_cpu \\
        --methods profl,fedavg,exclusive,allsmall,heterofl,fedrolex,depthfl,inclusivefl \\
        --seeds 0 --data-dir ../shared/data --out benchmarks/results/cifar10-cpu

``--report-only`` rebuilds the table and plots from the ``results.json`` files of
an existing ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from math import nan
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = "profl,fedavg,exclusive,allsmall,heterofl,fedrolex,depthfl,inclusivefl"
# Named variants: a conf/method entry plus run-config of its own, one table row each.
# profl-capped: effective movement cannot end a step early, so every step runs to its cap;
# profl-denoised: effective movement net of client-sampling noise (profl_strategy/movement.py);
# the rest switch one of ProFL's defaults back or off, for the ablations (README).
VARIANTS = {
    "profl-plans": ("profl", "plans='exact'"),
    "profl-noplans": ("profl", "plans='off'"),
    "profl-capped": ("profl", "em-threshold=0.001"),
    "profl-denoised": ("profl", "em-variant='denoised' em-threshold=0.5"),
    "profl-vector": ("profl", "em-variant='vector' em-threshold=0.6"),
    "profl-l1": ("profl", "em-variant='vector' em-norm='l1' em-window=6 em-sample=10000"),
    "profl-shrink": ("profl", "overrides='method.shrink=true'"),
    "profl-noshrink": ("profl", "overrides='method.shrink=false'"),
    "profl-fixedcaps": ("profl", "share-rounds=false"),
    "profl-nomem": ("profl", "overrides='method.memory_aware=false'"),
    "profl-depth1": ("profl", "overrides='method.output_depth=1'"),
    "profl-nocarry": ("profl", "overrides='method.carry_forward=false'"),
    "profl-5ep": ("profl", "local-epochs=5"),
    "profl-10nodes": ("profl", "fraction-train=0.5"),
}
# Handlers a method needs on the ClientApp (message types), to fail before a long run.
NEEDS = {
    "allsmall": "train.width",
    "heterofl": "train.width",
    "fedrolex": "train.width",
    "depthfl": "train.depth",
    "inclusivefl": "train.depth",
}
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "outputs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
    "results", "deploy", ".flwr*", ".cache*",
)  # fmt: skip
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# server_app.results.round_line: round stage block elig/sel acc loss EM need meas down up time
ROUND = re.compile(
    r"^\s*(?P<round>\d+)\s+(?P<stage>\d+)\s+(?P<block>\d+)\s+(?P<elig>\d+)/(?P<sel>\d+)\s+"
    r"(?P<acc>\S+)\s+(?P<loss>\S+)\s+\S+\s+(?P<need>\S+)\s+.*\s(?P<secs>[\d.]+)s\s*$"
)


# ---- running ---------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listener_pids(port: int) -> list[int]:
    """Processes listening on ``port`` (the managed SuperLink our ``flwr run`` started)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return [
        int(p.split("=")[1]) for p in out.stdout.replace(",", " ").split() if p.startswith("pid=")
    ]


def snapshot_app(src: Path, dst: Path) -> Path:
    """Copy the app once, so every run of the comparison uses the same code."""
    shutil.copytree(src, dst, ignore=COPY_IGNORE)
    return dst


def registered_actions(app: Path) -> set[str] | None:
    """Message types the app's ClientApp handles (None if that cannot be read)."""
    code = "import client_app.app as a; print(' '.join(sorted(a.app._registered_funcs)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=app, capture_output=True, text=True, timeout=300
    )
    return set(out.stdout.split()) if out.returncode == 0 else None


def check_app(app: Path, methods: Sequence[str]) -> None:
    """Stop before training if a method's ClientApp handler is not registered."""
    methods = [VARIANTS.get(m, (m, ""))[0] for m in methods]
    needed = {NEEDS[m] for m in methods if m in NEEDS}
    if not needed:
        return
    have = registered_actions(app)
    missing = needed - have if have is not None else set()
    if missing:
        raise SystemExit(
            f"the ClientApp in {app} has no handler for {sorted(missing)}: "
            "client_app/app.py must end with `import client_app.baselines  # noqa: E402, F401`"
        )


def quote(value: str) -> str:
    """A string value for ``--run-config``."""
    return "'" + value.replace("'", "\\'") + "'"


@dataclass
class RunSpec:
    """One (method, seed) of the comparison."""

    method: str
    seed: int
    out: Path
    status: str = "pending"
    seconds: float = 0.0
    results: str = ""
    error: str = ""
    rounds_seen: int = 0

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}"


@dataclass
class Settings:
    """What is the same for every run."""

    preset: str
    data_dir: str
    num_supernodes: int
    extra: str
    timeout: float
    app: str
    runs: list[RunSpec] = field(default_factory=list)
    federation: str = ""  # more --federation-config, e.g. "client-resources-num-cpus=1"
    env: dict[str, str] = field(default_factory=dict)  # more environment for the run


def progress(tag: str, line: str, started: float) -> bool:
    """Print a one-line progress for a round line of the log; True if it was one."""
    text = ANSI.sub("", line).split(":", 1)[-1] if ":" in line else ANSI.sub("", line)
    m = ROUND.match(text)
    if not m:
        return False
    print(
        f"{tag} round {int(m['round']):4d}  acc {m['acc']:>6}  loss {m['loss']:>7}  "
        f"nodes {m['elig']:>3}/{m['sel']:<3}  need {m['need']:>8} MB  "
        f"{float(m['secs']):5.1f} s/round  {time.monotonic() - started:7.0f} s",
        flush=True,
    )
    return True


def run_one(spec: RunSpec, cfg: Settings, tag: str, tmp: Path) -> None:
    """One ``flwr run`` with a private FLWR_HOME and ports, streaming progress."""
    home = tmp / f"home-{spec.name}"
    http, control = free_port(), free_port()
    env = (
        os.environ
        | {
            "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
            "FLWR_LOCAL_CONTROL_API_PORT": str(control),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "RAY_DEDUP_LOGS": "0",
        }
        | cfg.env
    )
    method, own = VARIANTS.get(spec.method, (spec.method, ""))
    run_config = " ".join(
        [
            f"preset={quote(cfg.preset)}",
            f"method={quote(method)}",
            own,
            f"seed={spec.seed}",
            f"outputs-dir={quote(str(spec.out))}",
            *([f"data-dir={quote(cfg.data_dir)}"] if cfg.data_dir else []),
            cfg.extra,
        ]
    ).strip()
    cmd = [
        "flwr", "run", cfg.app, "--stream", "--run-config", run_config,
        "--federation-config", f"num-supernodes={cfg.num_supernodes} {cfg.federation}".strip(),
    ]  # fmt: skip
    spec.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"{tag} start: {spec.method} seed {spec.seed}", flush=True)
    with open(spec.out / "flwr.log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd, env=env, cwd=cfg.app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if progress(tag, line, started):
                    spec.rounds_seen += 1
                elif "ERROR" in line or "Traceback" in line:
                    print(f"{tag} {ANSI.sub('', line).rstrip()}", flush=True)
                if time.monotonic() - started > cfg.timeout:
                    proc.kill()
                    spec.error = f"timed out after {cfg.timeout:.0f} s"
                    break
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in listener_pids(http):  # the managed SuperLink outlives `flwr run`
                os.kill(pid, signal.SIGTERM)
    spec.seconds = time.monotonic() - started
    found = sorted(spec.out.glob("*/results.json"))
    done = found and "summary" in json.loads(found[-1].read_text())
    if proc.returncode == 0 and done and not spec.error:
        spec.status, spec.results = "ok", str(found[-1])
    else:
        spec.status = "failed"
        spec.error = spec.error or f"flwr run exited with {proc.returncode}; see flwr.log"
        if found:
            spec.results = str(found[-1])
    print(f"{tag} {spec.status} in {spec.seconds:.0f} s {spec.error}", flush=True)


# ---- reporting ---------------------------------------------------------------------------
def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def _std(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _round_peak(r: dict[str, Any]) -> float:
    """Largest estimated peak a selected node was asked for (its plan's, with plans on)."""
    plans = [n["plan_need_mb"] for n in r.get("selected_nodes", []) if "plan_need_mb" in n]
    return max(plans) if plans else float(r["need_mb"])


def run_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The comparison's numbers of one run, from its results.json."""
    rounds = data.get("rounds", [])
    summary = data.get("summary", {})
    budgets = summary.get("budgets_mb") or []
    nodes = len(budgets) or max((r.get("online", 0) for r in rounds), default=0)
    accs = [r["accuracy"] for r in rounds if isinstance(r.get("accuracy"), int | float)]
    final = summary.get("final_accuracy", accs[-1] if accs else float("nan"))
    trained = [r for r in rounds if r.get("selected")]
    needs = [_round_peak(r) for r in trained if isinstance(r.get("need_mb"), int | float)]
    partitions = {n.get("partition") for r in rounds for n in r.get("selected_nodes", [])}
    share = [r.get("eligible", 0) / (r.get("online") or nodes) for r in rounds if nodes]
    # One evaluation of a model trained by 4 non-IID nodes a round swings by several
    # points; the mean over the last quarter of the run is the steadier figure.
    last = summary.get("rounds", len(rounds))
    tail = [r["accuracy"] for r in rounds if "accuracy" in r and r["round"] > 0.75 * last]
    # CUDA clients report max_memory_allocated per train call; 0 elsewhere
    cuda_peak = max((r.get("peak_mb_measured") or 0.0 for r in rounds), default=0.0)
    return {
        "final_accuracy": final,
        "tail_accuracy": _mean(tail) if tail else final,
        "best_accuracy": max((a for a in (*accs, final) if a == a), default=float("nan")),
        "rounds": summary.get("rounds", len(rounds)),
        "wall_s": data.get("wall_s", float("nan")),
        # median: robust to a round slowed by other work on the machine
        "s_per_round": statistics.median([r["round_s"] for r in rounds if "round_s" in r] or [nan]),
        "peak_mb_est": max(needs) if needs else float("nan"),
        "peak_mb_cuda": cuda_peak if cuda_peak > 0 else float("nan"),
        "full_model_mb_est": summary.get("full_model_peak_mb_est", float("nan")),
        "smallest_budget_mb": min(budgets) if budgets else float("nan"),
        "eligible_share": _mean(share),
        "trained_share": len(partitions) / nodes if nodes else float("nan"),
        "mb_down_per_round": _mean(r.get("bytes_down", 0) / 2**20 for r in rounds),
        "mb_up_per_round": _mean(r.get("bytes_up", 0) / 2**20 for r in rounds),
        "curve": [(r["round"], r["accuracy"]) for r in rounds if "accuracy" in r],
    }


COLUMNS = [  # key, header, format
    ("final_accuracy", "final acc", ".4f"),
    ("tail_accuracy", "mean acc, last 25% of rounds", ".4f"),
    ("best_accuracy", "best acc", ".4f"),
    ("rounds", "rounds", ".0f"),
    ("wall_s", "wall s", ".0f"),
    ("s_per_round", "median s/round", ".1f"),
    ("peak_mb_est", "worst client peak MB (est.)", ".2f"),
    ("peak_mb_cuda", "worst client peak MB (CUDA)", ".2f"),
    ("full_model_mb_est", "full-model MB (est.)", ".2f"),
    ("eligible_share", "eligible share", ".3f"),
    ("trained_share", "nodes trained", ".3f"),
    ("mb_down_per_round", "MB down/round", ".3f"),
    ("mb_up_per_round", "MB up/round", ".3f"),
]


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Every finished run under ``out/runs`` with its method, seed and numbers."""
    rows = []
    for path in sorted(out.glob("runs/*/*/results.json")):
        data = json.loads(path.read_text())
        if "summary" not in data:
            continue
        method, _, seed = path.parent.parent.name.rpartition("-s")
        rows.append({"method": method, "seed": int(seed), **run_metrics(data)})
    return rows


def by_method(rows: list[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over seeds, per method, in the requested order."""
    methods = [m for m in order if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods))
    table = []
    for m in methods:
        runs = [r for r in rows if r["method"] == m]
        entry: dict[str, Any] = {"method": m, "seeds": len(runs)}
        for key, _, _ in COLUMNS:
            entry[key] = _mean(r[key] for r in runs)
            entry[key + "_std"] = _std([r[key] for r in runs])
        table.append(entry)
    return table


def _cell(entry: dict[str, Any], key: str, fmt: str) -> str:
    value, std = entry[key], entry.get(key + "_std", 0.0)
    if value != value:  # NaN
        return "-"
    return f"{value:{fmt}}" + (f" ± {std:{fmt}}" if entry["seeds"] > 1 and std else "")


def write_tables(out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    """table.md and table.csv (per method), runs.csv (per run)."""
    head = ["method", "seeds", *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in table:
        cells = [e["method"], str(e["seeds"]), *(_cell(e, k, f) for k, _, f in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nmean acc, last 25% of rounds: mean test accuracy of the evaluations in the last "
        "quarter of the rounds; worst client peak: the largest estimated training peak any "
        "selected node was asked for (ProFL's memory model); (CUDA): the largest "
        "torch.cuda.max_memory_allocated() a node reported ('-' without CUDA clients; "
        "benchmarks/method_memory.py measures every method's jobs on a GPU without Flower); "
        "eligible share: mean over rounds "
        "of eligible/online nodes; nodes trained: share of nodes selected at least once; "
        "wall s: the ServerApp's run time (results.json).\n"
    )
    (out / "table.md").write_text("\n".join(lines) + "\n" + note)
    keys = [k for k, _, _ in COLUMNS]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seeds", *keys, *(k + "_std" for k in keys)])
        for e in table:
            w.writerow(
                [e["method"], e["seeds"], *(e[k] for k in keys), *(e[k + "_std"] for k in keys)]
            )
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *keys])
        for r in rows:
            w.writerow([r["method"], r["seed"], *(r[k] for k in keys)])


def write_plots(out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    """accuracy.png, memory.png and participation.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    methods = [e["method"] for e in table]
    fig, ax = plt.subplots(figsize=(8, 5))
    for m in methods:
        curves: dict[int, list[float]] = {}
        for r in rows:
            if r["method"] == m:
                for rnd, acc in r["curve"]:
                    curves.setdefault(rnd, []).append(acc)
        xs = sorted(curves)
        ax.plot(xs, [_mean(curves[x]) for x in xs], label=m, marker="." if len(xs) < 30 else None)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="round", ylabel="test accuracy (global model)", title="Accuracy per round")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(methods) + 2))
    peaks = [e["peak_mb_est"] for e in table]
    ax.barh(methods, peaks, color="tab:blue")
    full = _mean(e["full_model_mb_est"] for e in table)
    small = _mean(r["smallest_budget_mb"] for r in rows)
    if full == full:
        ax.axvline(full, color="k", ls="--", label=f"full-model training {full:.1f} MB")
    if small == small:
        ax.axvline(small, color="tab:red", ls=":", label=f"smallest budget {small:.1f} MB")
    ax.invert_yaxis()
    ax.set(xlabel="MB (estimated)", title="Worst-case per-client training peak")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(methods) + 2))
    y = range(len(methods))
    ax.barh([i - 0.2 for i in y], [e["eligible_share"] for e in table], 0.4, label="eligible")
    ax.barh([i + 0.2 for i in y], [e["trained_share"] for e in table], 0.4, label="trained")
    ax.set_yticks(list(y), methods)
    ax.invert_yaxis()
    ax.set(xlabel="share of nodes", xlim=(0, 1.05), title="Participation")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "participation.png", dpi=120)
    plt.close(fig)


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
        "python -m benchmarks.compare " + " ".join(shlex.quote(a) for a in argv[1:])
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
            f"![accuracy per round]({rel}/accuracy.png)",
            f"![worst per-client peak]({rel}/memory.png)",
            f"![participation]({rel}/participation.png)",
            end,
        ]
    )
    head, rest = text.split(start, 1)
    readme.write_text(head + body + rest.split(end, 1)[1])
    return True


# ---- entry point ---------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cifar10_cpu", help="conf/experiment/<preset>.yaml")
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated conf/method names or variants ({', '.join(VARIANTS)})",
    )
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument(
        "--out", default="", help="result folder (default benchmarks/results/<preset>-<time>)"
    )
    p.add_argument("--num-supernodes", type=int, default=20)
    p.add_argument(
        "--extra-run-config", default="", help='more run-config, e.g. "num-server-rounds=5"'
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    p.add_argument(
        "--app", default=str(REPO), help="the Flower app to run (default: this checkout)"
    )
    p.add_argument("--report-only", action="store_true", help="only rebuild tables and plots")
    p.add_argument(
        "--readme",
        default="",
        help="README whose <!-- compare:<out folder> --> section is rewritten from the results",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every (method, seed), then write the report; non-zero exit if a run failed."""
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{args.preset}-{stamp}").resolve()
    if args.report_only:
        ok = bool(report(out, methods))
        if ok and args.readme:
            update_readme(Path(args.readme), out)
        return 0 if ok else 1
    available = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    unknown = [m for m in methods if m not in available | set(VARIANTS)]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; available: {sorted(available)}")
    data_dir = str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else ""
    out.mkdir(parents=True, exist_ok=True)
    cfg = Settings(
        args.preset, data_dir, args.num_supernodes, args.extra_run_config, args.timeout, ""
    )
    cfg.runs = [RunSpec(m, s, out / "runs" / f"{m}-s{s}") for m in methods for s in seeds]
    manifest = out / "manifest.json"
    # Runs added to an existing folder (e.g. a variant run later) keep the earlier ones.
    earlier = json.loads(manifest.read_text()) if manifest.exists() else {}
    names = {spec.name for spec in cfg.runs}
    kept = [r for r in earlier.get("runs", []) if f"{r['method']}-s{r['seed']}" not in names]
    commands = [*earlier.get("commands", [earlier["argv"]] if "argv" in earlier else []), sys.argv]
    with tempfile.TemporaryDirectory(prefix="profl-compare-") as tmp_name:
        tmp = Path(tmp_name)
        cfg.app = str(snapshot_app(Path(args.app).resolve(), tmp / "app"))
        check_app(Path(cfg.app), methods)
        print(
            f"comparing {len(methods)} methods x {len(seeds)} seeds on preset '{args.preset}' "
            f"with {args.num_supernodes} nodes -> {out}",
            flush=True,
        )
        for i, spec in enumerate(cfg.runs, 1):
            run_one(spec, cfg, f"[{i}/{len(cfg.runs)} {spec.name}]", tmp)
            info = asdict(cfg) | {"commands": commands, "app_source": str(Path(args.app).resolve())}
            info["runs"] = kept + info["runs"]
            manifest.write_text(json.dumps(info, indent=1, default=str))
    if report(out, methods) and args.readme:
        update_readme(Path(args.readme), out)
    failed = [s.name for s in cfg.runs if s.status != "ok"]
    if failed:
        print(f"failed runs: {', '.join(failed)} (see their flwr.log)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
