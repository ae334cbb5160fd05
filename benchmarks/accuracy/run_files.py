"""A comparison's run files as committed: ``results.json`` and ``flwr.log``, gzipped.

A CIFAR-10 run's ``results.json`` holds every round's record (≈ 0.5 MB for 550 rounds) and
compresses about 20×. The GPU machine receives the whole working tree in 64 MiB, carried
wheels and data included, so committed runs are packed (``results.json.gz``,
``flwr.log.gz``); the readers here take either form, so fresh and packed folders report
alike. ``zcat runs/<method>-s<seed>/*/results.json.gz`` shows one.

Example::

    python -m benchmarks.accuracy.run_files benchmarks/results/cifar10_plateau_550
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

RESULTS = "results.json"
PACKED = (RESULTS, "flwr.log")


def results_paths(out: Path) -> list[Path]:
    """Every run's results file under ``out/runs/<method>-s<seed>/<run>/``.

    A run folder with both forms counts once, by its plain ``results.json``.
    """
    found = {p.parent: p for p in out.glob(f"runs/*/*/{RESULTS}.gz")}
    found |= {p.parent: p for p in out.glob(f"runs/*/*/{RESULTS}")}
    return [found[d] for d in sorted(found)]


def read_results(path: Path) -> dict[str, Any]:
    """``results.json`` at ``path``, plain or gzipped (``path`` may name either)."""
    path = Path(path)
    if not path.exists() and path.suffix != ".gz":
        path = path.with_name(path.name + ".gz")
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    return json.loads(path.read_text())


def pack(folder: Path) -> tuple[int, int]:
    """Gzip the run files under ``folder`` in place; return bytes before and after.

    Linked run folders are left to the folder that holds them. The archives carry no
    name or time, so packing the same file twice gives the same bytes.
    """
    before = after = 0
    for path in sorted(p for name in PACKED for p in folder.rglob(name)):
        if path.is_symlink() or _under_link(path, folder):
            continue
        raw = path.read_bytes()
        packed = gzip.compress(raw, mtime=0)
        path.with_name(path.name + ".gz").write_bytes(packed)
        path.unlink()
        before, after = before + len(raw), after + len(packed)
    return before, after


def _under_link(path: Path, root: Path) -> bool:
    """Whether a folder between ``root`` and ``path`` is a link."""
    return any((root / p).is_symlink() for p in path.relative_to(root).parents)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="comparison folders (--out)")
    args = p.parse_args()
    for folder in args.folders:
        before, after = pack(folder)
        print(f"{folder}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
