"""Batched image loading gives torchvision's per-image batches, to the bit and the stride."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from profl_strategy.task import dataset as ds
from profl_strategy.task.dataset_info import DATASETS
from profl_strategy.task.images import CropFlip
from tests.support.paths import shared_data

DATA = str(shared_data())


class _PerImage(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The loader as it was before batching: v2 transforms and normalisation per image."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str, train: bool) -> None:
        info = DATASETS[name]
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mean = torch.tensor(info.mean).view(-1, 1, 1)
        self.std = torch.tensor(info.std).view(-1, 1, 1)
        cifar = name.startswith("cifar")
        self.augment = (
            v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
            if train and cifar
            else None
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        return (image.float().div(255.0) - self.mean) / self.std, self.labels[index]


def _reference(
    images: np.ndarray, labels: np.ndarray, name: str, *, train: bool, channels_last: bool
) -> DataLoader:
    def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        x, y = default_collate(batch)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    return DataLoader(
        _PerImage(images, labels, name, train),
        batch_size=32,
        shuffle=train,
        generator=torch.Generator().manual_seed(0) if train else None,
        collate_fn=collate,
    )


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("name", "train"), [("cifar10", True), ("cifar10", False), ("fmnist", True)]
)
def test_batches_equal_the_per_image_transforms(
    name: str, train: bool, channels_last: bool
) -> None:
    images, labels = ds.load_test(name, data_dir=DATA, seed=0)
    images, labels = images[:100], labels[:100]  # a short last batch too
    got, want = [], []
    for loader, out in (
        (
            ds.make_loader(
                images,
                labels,
                name,
                batch_size=32,
                train=train,
                seed=0,
                channels_last=channels_last,
            ),
            got,
        ),
        (_reference(images, labels, name, train=train, channels_last=channels_last), want),
    ):
        torch.manual_seed(7)  # the crops and flips come from the global RNG
        for _ in range(2):  # two epochs: the draws go on where they stopped
            out.extend(loader)
        out.append(torch.rand(1))  # and leave the RNG where the old loader did
    assert len(got) == len(want) == 2 * 4 + 1
    for g, w in zip(got[:-1], want[:-1], strict=True):
        assert torch.equal(g[0], w[0]) and torch.equal(g[1], w[1])
        assert g[0].stride() == w[0].stride() and g[0].dtype == w[0].dtype
    assert torch.equal(got[-1], want[-1])


def test_crop_flip_returns_crops_of_the_padded_image() -> None:
    images = torch.randint(1, 255, (2, 3, 8, 8), dtype=torch.uint8)
    padded = F.pad(images[1], (2, 2, 2, 2))
    crops = [padded[:, t : t + 8, u : u + 8] for t in range(5) for u in range(5)]
    valid = crops + [c.flip(-1) for c in crops]
    crop = CropFlip(images, padding=2)
    torch.manual_seed(0)
    outputs = [crop(1) for _ in range(200)]
    hits = [[i for i, v in enumerate(valid) if torch.equal(out, v)] for out in outputs]
    assert all(len(h) == 1 for h in hits)  # every output is one of the 50 crops
    assert len({h[0] for h in hits}) > 40  # offsets and flips both vary
    with pytest.raises(ValueError, match="padding >= 1"):
        CropFlip(images, padding=0)


def test_single_items_are_normalised_images() -> None:
    images, labels = ds.load_test("fmnist", data_dir=DATA, seed=0)
    loader = ds.make_loader(images[:4], labels[:4], "fmnist", batch_size=2, train=False, seed=0)
    x, y = loader.dataset[3]
    info = DATASETS["fmnist"]
    plain = torch.from_numpy(images[3]).permute(2, 0, 1).float() / 255.0
    want = (plain - torch.tensor(info.mean).view(-1, 1, 1)) / torch.tensor(info.std).view(-1, 1, 1)
    assert x.shape == (1, 28, 28) and torch.equal(x, want) and int(y) == labels[3]
