"""flwr-datasets' partitioners over the 60,000 Fashion-MNIST training rows, and the cache.

Partitions are disjoint, cover the split, follow the seed and the partitioner's skew; a
partition is cached on disk and read back identically, a changed key never reads a stale
one, an unreadable cache is rebuilt and an unwritable one only warns. Each split runs
flwr-datasets on the whole training split (seconds each): the data pipeline, not a unit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from profl_strategy.task import dataset as ds
from profl_strategy.task import partition_cache as pc
from tests.support.partitions import NUM_PARTITIONS, SPLIT
from tests.support.paths import shared_data

DATA_DIR = shared_data()
DATA = str(DATA_DIR)

pytestmark = [
    pytest.mark.skipif(
        not (DATA_DIR / "FashionMNIST" / "raw").is_dir(),
        reason=f"offline data not found in {DATA_DIR} (set PROFL_DATA_DIR)",
    ),
    pytest.mark.usefixtures("isolated_cache"),  # partitions in a fresh cache, never in ~
]


def _rows(kind: str, seed: int, *, alpha: float = 0.3) -> list[np.ndarray]:
    return [
        ds.partition_rows(
            "fmnist",
            pid,
            NUM_PARTITIONS,
            partitioner=kind,
            alpha=alpha,
            shards_per_partition=2,
            seed=seed,
            data_dir=DATA,
        )
        for pid in range(NUM_PARTITIONS)
    ]


def _label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between client and global label mixes."""
    glob = np.bincount(labels, minlength=10) / len(labels)
    dists = [np.bincount(labels[p], minlength=10) / len(p) for p in parts]
    return float(np.mean([0.5 * np.abs(d - glob).sum() for d in dists]))


@pytest.mark.parametrize("kind", ["iid", "dirichlet"])
def test_partitions_disjoint_and_cover_train(kind: str) -> None:
    parts = _rows(kind, seed=0)
    everything = np.concatenate(parts)
    assert sum(len(p) for p in parts) == 60000
    assert len(np.unique(everything)) == 60000  # disjoint and covering


@pytest.mark.slow
def test_partitions_deterministic_for_seed() -> None:
    first = _rows("dirichlet", seed=3)
    ds.clear_caches()  # rebuild the partitioner from scratch
    again = _rows("dirichlet", seed=3)
    other = _rows("dirichlet", seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    iid_a, iid_b = _rows("iid", seed=3), _rows("iid", seed=4)
    assert not np.array_equal(iid_a[0], iid_b[0])


def test_load_partition_matches_rows() -> None:
    kwargs = {"partitioner": "dirichlet", "alpha": 0.3, "shards_per_partition": 2}
    images, labels = ds.load_partition("fmnist", 2, NUM_PARTITIONS, seed=0, data_dir=DATA, **kwargs)
    rows = ds.partition_rows("fmnist", 2, NUM_PARTITIONS, seed=0, data_dir=DATA, **kwargs)
    full_x, full_y = ds._local_full("fmnist", "train", DATA)
    assert images.dtype == np.uint8 and images.shape == (len(rows), 28, 28, 1)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, full_x[rows])
    np.testing.assert_array_equal(labels, full_y[rows])


def _uncached(**split: object) -> tuple[np.ndarray, np.ndarray]:
    """Partition 2 of fmnist straight from the partitioner, never through the disk cache."""
    rows = ds.partition_rows("fmnist", 2, NUM_PARTITIONS, **split)
    images, labels = ds._local_full("fmnist", "train", DATA)
    return images[rows], labels[rows]


def _assert_arrays_equal(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_partition_is_cached_and_read_back_identically(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ds.load_partition("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    files = pc.partition_cache_files("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    assert all(path.is_file() for path in files)
    assert not list(fresh_cache.rglob("*.tmp"))

    def split_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("split again although the partition is cached")

    monkeypatch.setattr(ds, "_split_partition", split_again)
    ds.clear_caches()  # as in a fresh process: nothing left in memory
    cached = ds.load_partition("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    _assert_arrays_equal(first, _uncached(**SPLIT))
    _assert_arrays_equal(cached, first)


@pytest.mark.parametrize("change", [{"seed": 1}, {"alpha": 0.5}])
def test_changed_key_does_not_read_a_stale_partition(fresh_cache: Path, change: dict) -> None:
    # A recognisable stand-in where the unchanged key's partition is cached.
    stale = (np.full((3, 28, 28, 1), 7, dtype=np.uint8), np.arange(3, dtype=np.int64))
    files = pc.partition_cache_files("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    for path, array in zip(files, stale, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)
    _assert_arrays_equal(ds.load_partition("fmnist", 2, NUM_PARTITIONS, **SPLIT), stale)
    changed = SPLIT | change
    got = ds.load_partition("fmnist", 2, NUM_PARTITIONS, **changed)
    _assert_arrays_equal(got, _uncached(**changed))


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache for one test (the module's cache stays for the others)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PROFL_CACHE_DIR", str(folder))
    return folder


def test_unreadable_cache_is_rebuilt(fresh_cache: Path) -> None:
    images_file, labels_file = pc.partition_cache_files("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    labels_file.parent.mkdir(parents=True)
    labels_file.write_bytes(b"half a file")
    got = ds.load_partition("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    _assert_arrays_equal(got, _uncached(**SPLIT))
    _assert_arrays_equal((np.load(images_file), np.load(labels_file)), got)


def test_unwritable_cache_warns_and_still_loads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    monkeypatch.setenv("PROFL_CACHE_DIR", str(not_a_folder))
    with pytest.warns(UserWarning, match="PROFL_CACHE_DIR"):
        got = ds.load_partition("fmnist", 2, NUM_PARTITIONS, **SPLIT)
    _assert_arrays_equal(got, _uncached(**SPLIT))


def test_dirichlet_is_label_skewed_and_shards_have_few_labels() -> None:
    _, labels = ds._local_full("fmnist", "train", DATA)
    iid_skew = _label_skew(_rows("iid", seed=0), labels)
    dir_skew = _label_skew(_rows("dirichlet", seed=0, alpha=0.1), labels)
    assert iid_skew < 0.05
    assert dir_skew > 0.3
    shards = _rows("shards", seed=0)
    n_labels = [len(np.unique(labels[p])) for p in shards]
    assert max(n_labels) <= 4, n_labels  # 2 shards, each at most 2 labels
