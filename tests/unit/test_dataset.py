"""Tests for profl_strategy.task's dataset, partition cache, local readers, loaders, hub errors.

They read the offline data in ``shared/data`` (or ``$PROFL_DATA_DIR``) and never
download anything: hub code paths run against an in-memory fake of
``datasets.load_dataset``; with the Hugging Face libraries forced offline, in a fresh
process: ``tests/integration/test_dataset_offline_hub.py``. flwr-datasets' partitioners over
the 60,000 real training rows and the partition cache they fill:
``tests/integration/test_partitions.py``; the whole CIFAR-10 train split, decoded and checked
against its index: ``tests/integration/test_dataset_cifar10.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from profl_strategy.models.cnn import CNNSpec
from profl_strategy.task import dataset as ds
from profl_strategy.task import dataset_info
from profl_strategy.task import partition_cache as pc
from profl_strategy.task.local_data import CIFAR10_FOLDER, cache_dir, split_files
from profl_strategy.task.split_order import seeded_order, split_order, validation_count
from tests.support.partitions import NUM_PARTITIONS, SPLIT
from tests.support.paths import shared_data

DATA_DIR = shared_data()
DATA = str(DATA_DIR)

pytestmark = [
    pytest.mark.skipif(
        not (DATA_DIR / "FashionMNIST" / "raw").is_dir()
        or not (DATA_DIR / CIFAR10_FOLDER).is_dir(),
        reason=f"offline data not found in {DATA_DIR} (set PROFL_DATA_DIR)",
    ),
    pytest.mark.usefixtures("isolated_cache"),  # decoded CIFAR-10 in a fresh cache, never in ~
]


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache for one test (the module's cache stays for the others)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PROFL_CACHE_DIR", str(folder))
    return folder


def test_cache_key_covers_what_decides_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def name(
        dataset: str = "fmnist", pid: int = 2, n: int = NUM_PARTITIONS, **change: object
    ) -> str:
        return pc.partition_cache_files(dataset, pid, n, **(SPLIT | change))[0].name

    other_data = tmp_path / "data"
    raw = other_data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in split_files("fmnist", "train", DATA):
        (raw / path.name).write_bytes(b"idx")
    names = [
        name(),
        name("mnist"),
        name(pid=3),
        name(n=NUM_PARTITIONS + 1),
        name(partitioner="shards"),
        name(alpha=0.5),
        name(shards_per_partition=3),
        name(seed=1),
        name(data_dir=""),  # the hub's copy
        name(data_dir=str(other_data)),
        name(val_fraction=0.1),  # validation rows held out
        name(val_fraction=0.2),
    ]
    labels_file = raw / "train-labels-idx1-ubyte"
    labels_file.write_bytes(b"idx, replaced")  # a replaced data file
    names.append(name(data_dir=str(other_data)))
    os.utime(labels_file, ns=(0, 0))  # same size, other mtime
    names.append(name(data_dir=str(other_data)))
    monkeypatch.setattr(pc, "PARTITION_CACHE_VERSION", pc.PARTITION_CACHE_VERSION + 1)
    names.append(name())
    assert len(set(names)) == len(names), names
    # no validation split: the partition it always was, so the cache it always had
    assert name(val_fraction=0.0) == name()


def test_validation_rows_are_a_seeded_share_cut_before_partitioning() -> None:
    val, rest = split_order(1000, 3, 0.1)
    assert len(val) == 100 and len(rest) == 900
    np.testing.assert_array_equal(np.sort(np.concatenate([val, rest])), np.arange(1000))
    again, _ = split_order(1000, 3, 0.1)
    np.testing.assert_array_equal(val, again)  # from (n, seed, fraction) alone
    assert not np.array_equal(np.sort(val), np.sort(split_order(1000, 4, 0.1)[0]))
    # 0: nothing held out, and the partitioner sees the order it always saw
    none, everything = split_order(1000, 3, 0.0)
    assert len(none) == 0
    np.testing.assert_array_equal(everything, seeded_order(1000, 3))
    assert validation_count(5, 0.01) == 1  # a tiny split still validates on one row


@pytest.mark.parametrize("bad", [-0.1, 0.5, 1.0])
def test_a_bad_validation_share_names_the_key(bad: float) -> None:
    with pytest.raises(ValueError, match=r"'val-fraction' \(data.val_fraction\) = .*\[0, 0.5\)"):
        split_order(1000, 0, bad)


def test_subsample_is_a_seeded_share_of_the_partition() -> None:
    rows = ds.subsample_rows(1000, 0.4, seed=3, partition_id=5)
    assert len(rows) == 400 and len(set(rows.tolist())) == 400
    assert rows.min() >= 0 and rows.max() < 1000 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, ds.subsample_rows(1000, 0.4, seed=3, partition_id=5))
    other = ds.subsample_rows(1000, 0.4, seed=3, partition_id=6)
    assert not np.array_equal(rows, other)  # nodes draw independently
    np.testing.assert_array_equal(ds.subsample_rows(7, 1.0, seed=0, partition_id=0), np.arange(7))
    assert len(ds.subsample_rows(3, 0.01, seed=0, partition_id=0)) == 1
    with pytest.raises(ValueError, match="data.subsample"):
        ds.subsample_rows(10, 0.0, seed=0, partition_id=0)


@pytest.mark.parametrize(
    ("name", "shape"), [("fmnist", (28, 28, 1)), ("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_test_split_sizes(name: str, shape: tuple[int, int, int]) -> None:
    images, labels = ds.load_test(name, data_dir=DATA, seed=0)
    assert images.shape == (10000, *shape) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))


def test_cifar10_decoded_arrays_are_cached() -> None:
    first, _ = ds._local_full("cifar10", "test", DATA)
    cached = sorted(p.name for p in cache_dir().glob("cifar10-jpeg-*.npy"))
    assert any("-test-" in name for name in cached), cached
    assert not list(cache_dir().glob("*.tmp"))
    ds.clear_caches()
    start = time.perf_counter()
    again, _ = ds._local_full("cifar10", "test", DATA)
    assert time.perf_counter() - start < 3.0
    np.testing.assert_array_equal(first, again)


def test_loader_normalises_and_shapes() -> None:
    images, labels = ds.load_test("fmnist", data_dir=DATA, seed=0)
    loader = ds.make_loader(images, labels, "fmnist", batch_size=500, train=False, seed=0)
    batches = list(loader)
    x, y = batches[0]
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    allx = torch.cat([b[0] for b in batches])
    assert abs(allx.mean().item()) < 0.05 and abs(allx.std().item() - 1.0) < 0.05
    # Evaluation keeps the order; training shuffles reproducibly by seed.
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.from_numpy(labels))
    order = [
        torch.cat(
            [
                b[1]
                for b in ds.make_loader(
                    images, labels, "fmnist", batch_size=500, train=True, seed=s
                )
            ]
        )
        for s in (1, 1, 2)
    ]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])


@pytest.mark.parametrize("train", [True, False])
def test_channels_last_batches_hold_the_same_values(train: bool) -> None:
    images, labels = ds.load_test("cifar10", data_dir=DATA, seed=0)
    images, labels = images[:64], labels[:64]
    batches = {}
    for layout in (False, True):
        torch.manual_seed(0)  # the same crops and flips
        loader = ds.make_loader(
            images, labels, "cifar10", batch_size=32, train=train, seed=0, channels_last=layout
        )
        batches[layout] = list(loader)
    for (x, y), (xc, yc) in zip(batches[False], batches[True], strict=True):
        assert torch.equal(x, xc) and torch.equal(y, yc)
        assert xc.is_contiguous(memory_format=torch.channels_last) and not xc.is_contiguous()
    # The model's output is the same up to rounding.
    torch.manual_seed(0)
    spec = CNNSpec(10, (3, 32, 32), 0.25)
    model = torch.nn.Sequential(*map(spec.make_block, range(4)), spec.make_head()).eval()
    with torch.no_grad():
        out, outc = model(batches[False][0][0]), model(batches[True][0][0])
    torch.testing.assert_close(out, outc, rtol=1e-4, atol=1e-5)


def _plain(image: np.ndarray, name: str) -> torch.Tensor:
    info = dataset_info.DATASETS[name]
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(info.mean).view(-1, 1, 1)) / torch.tensor(info.std).view(-1, 1, 1)


@pytest.mark.parametrize(
    ("name", "train", "augmented"),
    [
        ("cifar10", True, True),
        ("cifar10", False, False),
        ("fmnist", True, False),
    ],
)
def test_augmentation_only_for_cifar_training(name: str, train: bool, augmented: bool) -> None:
    images, labels = ds.load_test(name, data_dir=DATA, seed=0)
    images, labels = images[:32], labels[:32]
    loader = ds.make_loader(images, labels, name, batch_size=8, train=train, seed=0)
    torch.manual_seed(0)
    changed = 0
    for i in range(len(images)):
        x, y = loader.dataset[i]
        assert x.shape == _plain(images[i], name).shape and int(y) == labels[i]
        changed += not torch.allclose(x, _plain(images[i], name), atol=1e-6)
    assert (changed > 0) == augmented, changed


def test_errors_name_the_bad_value(tmp_path: Path) -> None:
    spec = {"alpha": 0.5, "shards_per_partition": 2, "seed": 0, "data_dir": DATA}
    with pytest.raises(ValueError, match=r"'bogus'.*iid"):
        ds.make_partitioner(dataset_info.Partition("mnist", 0, 2, partitioner="bogus", **spec))
    with pytest.raises(ValueError, match="'svhn'"):
        ds.load_test("svhn", data_dir=DATA, seed=0)
    with pytest.raises(ValueError, match="offline"):
        ds.load_test("cifar100", data_dir=DATA, seed=0)
    with pytest.raises(ValueError, match="partition_id 5"):
        ds.load_partition(
            "fmnist",
            5,
            5,
            partitioner="iid",
            alpha=1.0,
            shards_per_partition=2,
            seed=0,
            data_dir=DATA,
        )
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "FashionMNIST")):
        ds.load_test("fmnist", data_dir=str(tmp_path), seed=0)
    with pytest.raises(FileNotFoundError, match="CIFAR-10-images-jpeg.zip"):
        ds.load_test("cifar10", data_dir=str(tmp_path), seed=0)


def _fake_hub(name: str, n: int) -> datasets.DatasetDict:
    """An in-memory stand-in for a hub dataset; pixel (0, 0) encodes the row id."""
    info = dataset_info.DATASETS[name]
    c, h, w = info.input_shape
    mode = "L" if c == 1 else "RGB"
    rng = np.random.default_rng(0)

    def split(offset: int, size: int) -> datasets.Dataset:
        images = []
        for i in range(offset, offset + size):
            pixels = rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
            pixels[0, 0] = i
            images.append(Image.fromarray(pixels.squeeze(-1) if c == 1 else pixels, mode))
        features = datasets.Features(
            {
                info.image_column: datasets.Image(),
                info.label_column: datasets.ClassLabel(num_classes=info.num_classes),
            }
        )
        labels = [i % info.num_classes for i in range(offset, offset + size)]
        return datasets.Dataset.from_dict(
            {info.image_column: images, info.label_column: labels}, features=features
        )

    if name == "femnist":  # Only a train split exists on the hub.
        return datasets.DatasetDict({"train": split(0, n)})
    return datasets.DatasetDict({"train": split(0, n), "test": split(n, n // 4)})


@pytest.mark.parametrize("name", ["femnist", "cifar10"])
def test_hub_path_with_fake_hub(
    monkeypatch: pytest.MonkeyPatch, fresh_cache: Path, name: str
) -> None:
    fake = _fake_hub(name, 200)
    monkeypatch.setattr(datasets, "load_dataset", lambda **_: fake)
    c, h, w = dataset_info.DATASETS[name].input_shape
    split = {"partitioner": "iid", "alpha": 1.0, "shards_per_partition": 2, "seed": 7}
    ids = []
    for pid in range(4):
        x, y = ds.load_partition(name, pid, 4, data_dir="", **split)
        assert x.shape[1:] == (h, w, c) and x.dtype == np.uint8 and y.dtype == np.int64
        ids.append(x[:, 0, 0, 0])
    test_x, _ = ds.load_test(name, data_dir="", seed=7)
    train_ids = np.concatenate(ids)
    assert len(np.unique(train_ids)) == len(train_ids)
    if name == "femnist":  # 10% held out, never in a partition
        assert len(train_ids) == 180 and len(test_x) == 20
        assert not set(train_ids) & set(test_x[:, 0, 0, 0])
    else:
        assert len(train_ids) == 200 and len(test_x) == 50
    # Hub partitions are cached too: read back without the hub.
    monkeypatch.setattr(datasets, "load_dataset", None)
    ds.clear_caches()
    np.testing.assert_array_equal(
        ds.load_partition(name, 3, 4, data_dir="", **split)[0][:, 0, 0, 0], ids[3]
    )


@pytest.mark.parametrize("name", ["femnist", "cifar10"])
def test_hub_path_holds_out_validation_rows(
    monkeypatch: pytest.MonkeyPatch, fresh_cache: Path, name: str
) -> None:
    """The hub's validation split is cut from the shuffled train split before partitioning,
    as the local one: in no partition, and the partitions and it make up the train split."""
    fake = _fake_hub(name, 200)
    monkeypatch.setattr(datasets, "load_dataset", lambda **_: fake)
    split = {"partitioner": "iid", "alpha": 1.0, "shards_per_partition": 2, "seed": 7}
    parts = [
        ds.load_partition(name, pid, 4, data_dir="", val_fraction=0.1, **split)[0][:, 0, 0, 0]
        for pid in range(4)
    ]
    val_x, val_y = ds.load_validation(name, data_dir="", seed=7, val_fraction=0.1)
    train_ids, val_ids = np.concatenate(parts), val_x[:, 0, 0, 0]
    whole = 180 if name == "femnist" else 200  # FEMNIST's test split comes out first
    assert len(val_ids) == len(val_y) == whole // 10
    assert len(train_ids) + len(val_ids) == whole
    assert len(np.unique(np.concatenate([train_ids, val_ids]))) == whole  # disjoint
    labels, _ = ds.train_labels(name, data_dir="", seed=7, val_fraction=0.1)
    assert len(labels) == len(train_ids)  # the server's partition check sees the same rows
    test_x, _ = ds.load_test(name, data_dir="", seed=7)
    assert not set(val_ids) & set(test_x[:, 0, 0, 0])
    ds.clear_caches()  # another process: the same rows
    again, _ = ds.load_validation(name, data_dir="", seed=7, val_fraction=0.1)
    np.testing.assert_array_equal(again[:, 0, 0, 0], val_ids)


def test_hub_failure_tells_how_to_use_local_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(**_: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(RuntimeError, match="data-dir") as info:
        ds.load_test("cifar100", data_dir="", seed=0)
    assert "flwr run" in str(info.value) and "fmnist" in str(info.value)
