"""Image datasets that a DataLoader reads a batch at a time.

On one core a CIFAR round spent about a fifth of its time in torchvision's v2
transform dispatch (~0.15 ms an image before a pixel moves: pytree flattening,
input checks, a fresh zero-padded copy of every image). :class:`ImageDataset`
gives the DataLoader ``__getitems__``: the batch's crops are views into one
padded copy of the partition made once, the uint8 batch is stacked, and it is
normalised at once.

The crops and flips are torchvision's: :class:`CropFlip` draws exactly what
``v2.Compose([v2.RandomCrop(size, padding=p), v2.RandomHorizontalFlip()])`` draws
from torch's global RNG (top, left, then the flip), image by image in batch
order, and the batches come out with the same values and the same memory layout
as the per-image transforms gave: a seeded run trains on the same tensors, to the
bit (``tests/unit/test_images.py`` checks it against torchvision).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

Batch = tuple[torch.Tensor, torch.Tensor]
CROP_PADDING = {"cifar10": 4, "cifar100": 4}  # training-time random crops (padding per side)


def held_bytes(images: np.ndarray, dataset: str, train: bool = True) -> int:
    """Bytes an :class:`ImageDataset` of ``images`` keeps alive: the uint8 images, int64
    labels and, with crops, the padded copy it crops from (a node's data term)."""
    n, h, w, c = images.shape
    pad = CROP_PADDING.get(dataset, 0) if train else 0
    return images.nbytes + 8 * n + (n * c * (h + 2 * pad) * (w + 2 * pad) if pad else 0)


class CropFlip:
    """Random crops of the original size from zero-padded images, then a flip with p = 1/2.

    Parameters
    ----------
    images : torch.Tensor
        uint8 ``(N, C, H, W)``; padded once here by ``padding`` zeros on every side.
    padding : int
        As ``v2.RandomCrop(size=(H, W), padding=padding)``.
    """

    def __init__(self, images: torch.Tensor, padding: int) -> None:
        if padding < 1:
            raise ValueError(f"CropFlip needs padding >= 1, got {padding}.")
        self.height, self.width = images.shape[-2:]
        self.offsets = 2 * padding + 1
        # Contiguous, as v2's per-image pad returned it: the batches keep its layout.
        self.padded = F.pad(images.contiguous(), (padding,) * 4)

    def __call__(self, index: int) -> torch.Tensor:
        """Image ``index``, cropped and maybe flipped, drawing as v2 does."""
        top = int(torch.randint(0, self.offsets, size=()))
        left = int(torch.randint(0, self.offsets, size=()))
        image = self.padded[index, :, top : top + self.height, left : left + self.width]
        if torch.rand(1) < 0.5:  # v2 keeps the image when the draw is >= p
            image = image.flip(-1)
        return image


class ImageDataset(Dataset[Batch]):
    """uint8 images (4x less memory than float), normalised a batch at a time.

    Parameters
    ----------
    images : np.ndarray
        uint8 ``(N, H, W, C)``.
    labels : np.ndarray
        ``(N,)`` class indices.
    mean, std : Sequence[float]
        Per-channel normalisation of images scaled to [0, 1].
    crop_padding : int or None
        With a value: :class:`CropFlip` augmentation (CIFAR training). ``None``: the
        images as they are.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int | None = None,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.augment = CropFlip(self.images, crop_padding) if crop_padding else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Batch:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]) -> Batch:
        """One batch: float ``(B, C, H, W)`` images and int64 ``(B,)`` labels."""
        if self.augment is None:
            images = torch.stack([self.images[i] for i in indices])
        else:
            images = torch.stack([self.augment(i) for i in indices])
        images = (images.float().div(255.0) - self.mean) / self.std
        return images, self.labels[indices]


def whole_batch(batch: Batch) -> Batch:
    """DataLoader ``collate_fn`` for :class:`ImageDataset`: its batches come whole."""
    return batch


def channels_last_batch(batch: Batch) -> Batch:
    """As :func:`whole_batch`, with the images laid out channels-last in memory."""
    images, labels = batch
    return images.contiguous(memory_format=torch.channels_last), labels
