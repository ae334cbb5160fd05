"""Pack what the lent GPU machine lacks into ``.gpu/`` (in .gitignore), within its 64 MiB.

That machine has torch, numpy, pandas, pyarrow, grpcio and matplotlib, but no
Flower, grpcio-health-checking (flwr imports it), flwr-datasets, HF datasets, Hydra or
OmegaConf, no package index and no data. Its protobuf travels too, at the version here,
so the generated health-check code finds the runtime it was made for.
This script, run here, writes

- ``.gpu/whl/``: the wheels ``benchmarks/accuracy/gpu_session.sh`` installs there (``--no-deps``;
  only what the app imports: ``flwr`` without its SuperLink/CLI-only needs);
- ``.gpu/data/cifar10-jpeg/``: the full CIFAR-10 JPEG test split and ``--train-per-class``
  training images of each class (the first ones, in the original order), in the same
  layout as ``../shared/data`` (the whole 59 MiB zip plus the wheels would not fit);

and prints the device call to make::

    python -m benchmarks.common.gpu_bundle --data-dir ../shared/data --train-per-class 1000
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / ".gpu"
WHEELS = (  # at the versions installed here; the GPU image has the rest
    "flwr", "iterators", "cryptography", "cffi", "pycparser", "pycryptodome", "tomli",
    "flwr-datasets", "datasets", "dill", "multiprocess", "hydra-core", "omegaconf",
    "antlr4-python3-runtime", "grpcio-health-checking", "protobuf",
)  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_34_x86_64", "manylinux1_x86_64")  # fmt: skip


def subset_cifar10(src: Path, dst: Path, per_class: int) -> int:
    """Copy the test split and ``per_class`` train images per class; returns images kept."""
    dst.mkdir(parents=True, exist_ok=True)
    kept = 0
    with (
        zipfile.ZipFile(src / "CIFAR-10-images-jpeg.zip") as archive,
        zipfile.ZipFile(dst / "CIFAR-10-images-jpeg.zip", "w", zipfile.ZIP_STORED) as out,
    ):
        for split, limit in (("train", per_class), ("test", None)):
            with open(src / f"{split}_index.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            counts: dict[str, int] = {}
            chosen = []
            for row in rows:
                counts[row["label"]] = counts.get(row["label"], 0) + 1
                if limit is None or counts[row["label"]] <= limit:
                    chosen.append(row)
                    out.writestr(row["path"], archive.read(row["path"]))
            with open(dst / f"{split}_index.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(chosen)
            kept += len(chosen)
    return kept


def download_wheels(dst: Path) -> None:
    """The wheels for the GPU machine's Python 3.12 on x86-64.

    A package published only as a source archive (antlr4-python3-runtime) is pure
    Python: its wheel is built here, and installs there as well.
    """
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    for name in WHEELS:
        pinned = f"{name}=={version(name)}"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", *platforms,
               "-d", str(dst), pinned]  # fmt: skip
        if subprocess.run(cmd, check=False).returncode != 0:
            build = [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "-w",
                str(dst),
                pinned,
            ]
            subprocess.run(build, check=True)


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    # 1,000 a class: 2,500 (the H100 run of 2026-11-28) does not fit beside the tracked
    # files (21 MiB with the committed runs packed, benchmarks/accuracy/run_files.py) in 64 MiB
    p.add_argument("--train-per-class", type=int, default=1000)
    p.add_argument("--no-wheels", action="store_true", help="only the data subset")
    args = p.parse_args()
    kept = subset_cifar10(args.data_dir / "cifar10-jpeg", BUNDLE / "data" / "cifar10-jpeg",
                          args.train_per_class)  # fmt: skip
    if not args.no_wheels:
        download_wheels(BUNDLE / "whl")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    repo_mb = sum((REPO / f).stat().st_size for f in tracked.stdout.decode().split("\0") if f
                  and (REPO / f).is_file()) / 2**20  # fmt: skip
    total = size_mb(BUNDLE) + repo_mb
    print(f"{kept} CIFAR-10 images; .gpu holds {size_mb(BUNDLE):.1f} MiB, tracked files "
          f"{repo_mb:.1f} MiB: {total:.1f} of the 64 MiB a device call carries")  # fmt: skip
    if total > 64:
        sys.exit("too large for one device call: lower --train-per-class")
    print('device run: carry [".gpu"], command: bash benchmarks/accuracy/gpu_session.sh')


if __name__ == "__main__":
    main()
