"""Which ``malloc`` a comparison's runs use.

A CPU training step allocates and frees the same few activation buffers (megabytes each)
every step. glibc's ``malloc`` hands large ones back to the kernel and faults them in
again, so on the CPU a run spends part of its time zeroing pages; tcmalloc and jemalloc
keep them. Preloading one changes no number a run reports (PyTorch aligns its buffers
itself; the arithmetic is the same), only its time: measured in the README, "CIFAR-10 at
550 rounds", Time.

Neither library is a Python package: Debian/Ubuntu ship them as ``libtcmalloc-minimal4``
and ``libjemalloc2``. ``auto`` uses one when it is installed and the system's otherwise.
"""

from __future__ import annotations

import ctypes.util
import os

# name: (library names as ctypes.util.find_library takes them, the Debian package)
ALLOCATORS: dict[str, tuple[tuple[str, ...], str]] = {
    "tcmalloc": (("tcmalloc_minimal", "tcmalloc"), "libtcmalloc-minimal4"),
    "jemalloc": (("jemalloc",), "libjemalloc2"),
}
CHOICES = ("auto", "system", *ALLOCATORS)


def find(name: str) -> str | None:
    """The shared library of allocator ``name`` as the dynamic loader would find it."""
    libraries, _ = ALLOCATORS[name]
    for lib in libraries:
        found = ctypes.util.find_library(lib)
        if found:
            return found
    return None


def resolve(choice: str) -> tuple[str, str | None]:
    """(allocator name, library to preload or ``None``) for ``--allocator choice``.

    ``auto`` takes the first of :data:`ALLOCATORS` that is installed, else the system's;
    a named one that is not installed stops the comparison before it starts.
    """
    if choice not in CHOICES:
        raise SystemExit(f"--allocator {choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "system":
        return "system", None
    if choice == "auto":
        for name in ALLOCATORS:
            library = find(name)
            if library:
                return name, library
        return "system", None
    library = find(choice)
    if library is None:
        package = ALLOCATORS[choice][1]
        raise SystemExit(
            f"--allocator {choice}: its library is not installed; install it "
            f"(Debian/Ubuntu: apt install {package}) or use --allocator auto or system"
        )
    return choice, library


def preload_env(library: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment entries that make a child process use ``library`` as its ``malloc``
    (in front of any ``LD_PRELOAD`` already set); empty for the system's."""
    if library is None:
        return {}
    current = (os.environ if environ is None else environ).get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{library} {current}".strip()}
