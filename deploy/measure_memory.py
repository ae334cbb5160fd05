#!/usr/bin/env python3
"""Suggest a SuperNode's ``memory-mb``: the memory left for ProFL training on this device.

``memory-mb`` is compared with the app's estimate of one step's *training* memory
(parameters, gradients, optimizer state, saved activations, input batch). The
Python + PyTorch + Flower process around it, the data partition, the OS and (on
Jetson) the CUDA context come on top, so they are subtracted here.

Run it on the device, in the Python environment the SuperNode uses, while the
SuperNode is running idle (so its own memory is already taken) and nothing else
heavy runs:

    python3 deploy/measure_memory.py --data-mb 50        # Fashion-MNIST / MNIST
    python3 deploy/measure_memory.py --data-mb 160       # CIFAR-10

Linux only (reads /proc). Prints the measurements and ``memory-mb=<suggestion>``.
"""

from __future__ import annotations

import argparse
import sys
import time


def meminfo_mb() -> dict[str, float]:
    """/proc/meminfo in MB."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) / 1024
    return out


def private_rss_mb() -> float:
    """Anonymous (private) resident memory of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def row(label: str, mb: float, note: str = "") -> None:
    """One aligned line of the report."""
    print(f"{label:34s}{mb:9.0f} MB {note}".rstrip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data-mb",
        type=float,
        default=50.0,
        help="memory of the decoded training split the ClientApp loads (default 50: "
        "Fashion-MNIST; CIFAR-10 is about 160)",
    )
    ap.add_argument("--headroom-mb", type=float, default=256.0, help="kept free, at least")
    ap.add_argument(
        "--headroom-frac",
        type=float,
        default=0.10,
        help="kept free as a share of total RAM, if larger (default 0.10)",
    )
    ap.add_argument("--no-cuda", action="store_true", help="do not initialise CUDA even if present")
    args = ap.parse_args()

    before = meminfo_mb()
    rss0 = private_rss_mb()
    t0 = time.monotonic()
    import torch  # imported here on purpose: its memory is measured
    import torchvision  # noqa: F401

    try:
        from flwr import clientapp  # noqa: F401
    except ImportError:
        print("warning: flwr is not installed here; the baseline below leaves it out\n")

    import_s = time.monotonic() - t0
    baseline = private_rss_mb() - rss0
    after = meminfo_mb()
    avail = after["MemAvailable"]
    total = before["MemTotal"]
    headroom = max(args.headroom_mb, args.headroom_frac * total)

    row("RAM total", total)
    row("MemAvailable before imports", before["MemAvailable"])
    row("ClientApp baseline", baseline, f"private RSS of torch + flwr (imports {import_s:.1f} s)")
    row("MemAvailable with that", avail)
    row("data partition (--data-mb)", args.data_mb)
    row("headroom", headroom)
    limit = avail - args.data_mb - headroom
    print(f"{'torch threads':34s}{torch.get_num_threads():9d}    (OMP_NUM_THREADS changes it)")

    if not args.no_cuda and torch.cuda.is_available():
        dev = torch.device("cuda")
        torch.zeros(1, device=dev)  # creates the CUDA context
        free_b, total_b = torch.cuda.mem_get_info(dev)
        ctx = avail - meminfo_mb()["MemAvailable"]
        name = torch.cuda.get_device_name(dev)
        print(f"{'CUDA device':34s}{name}")
        row("CUDA context", ctx, "of RAM (unified memory on Jetson)")
        row("CUDA free", free_b / 2**20, f"of {total_b / 2**20:.0f} MB")
        # cuDNN/cuBLAS workspaces go through PyTorch's allocator but are not in the
        # app's estimate (about 80 MB on a desktop GPU): keep 128 MB more.
        limit = min(limit - ctx, free_b / 2**20 - args.data_mb - headroom) - 128
    if limit <= 0:
        print("\nNo memory left for training (memory-mb would be <= 0): leave this device out.")
        return 1
    print(f"\nmemory-mb={int(limit)}")
    print(
        "Check after a first run: results.json rounds[].peak_mb_measured (CUDA) should stay "
        "below it, and the device must not swap or be OOM-killed."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
