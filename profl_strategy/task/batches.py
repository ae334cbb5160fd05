"""Image datasets that a DataLoader reads a whole batch at a time.

A CIFAR round on one core spent about a fifth of its training time in per-sample
Python: torchvision's v2 transform framework costs ~0.1 ms an image before any
pixel moves. :class:`ImageBatches` gives the DataLoader ``__getitems__``, so a
batch is one gather, one crop-and-flip index and one normalisation.

The augmentation draws exactly what ``v2.Compose([v2.RandomCrop(size, padding=p),
v2.RandomHorizontalFlip()])`` draws from torch's global RNG, image by image in
batch order (top, left, flip), and applies the same zero padding, crop and flip:
a seeded run trains on the same tensors as with the per-image transforms, to the
bit (``tests/test_dataset.py`` checks it against torchvision).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class ImageBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """uint8 NCHW images (4x less memory than float), normalised per batch.

    Parameters
    ----------
    images, labels
        ``uint8`` images ``(N, C, H, W)`` and ``int64`` labels ``(N,)``.
    mean, std
        Per-channel normalisation.
    crop_padding
        With a value ``p``: random crops of the original size from the image padded
        by ``p`` zeros, then a horizontal flip with probability 1/2 (training
        augmentation). ``None``: the images as they are.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int | None = None,
    ) -> None:
        self.images = images.contiguous()  # NCHW batches, as the per-image path stacked
        self.labels = labels
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        if crop_padding:
            p = crop_padding
            self.padded = F.pad(self.images, (p, p, p, p))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: ``(float images (B, C, H, W), labels (B,))``."""
        rows = torch.as_tensor(indices, dtype=torch.int64)
        images = self._augmented(rows) if self.crop_padding else self.images[rows]
        return (images.float().div(255.0) - self.mean) / self.std, self.labels[rows]

    def _augmented(self, rows: torch.Tensor) -> torch.Tensor:
        """Crop and flip each image with v2's draws, in its order, as one gather."""
        _, c, h, w = self.images.shape
        offsets = 2 * int(self.crop_padding or 0) + 1
        tops, lefts, flips = [], [], []
        for _ in range(len(rows)):
            tops.append(int(torch.randint(0, offsets, size=())))
            lefts.append(int(torch.randint(0, offsets, size=())))
            flips.append(bool(torch.rand(1) < 0.5))  # v2 keeps the image if >= p
        ys = torch.tensor(tops).view(-1, 1) + torch.arange(h)
        xs = torch.tensor(lefts).view(-1, 1) + torch.arange(w)
        xs = torch.where(torch.tensor(flips).view(-1, 1), xs.flip(1), xs)
        return self.padded[
            rows.view(-1, 1, 1, 1),
            torch.arange(c).view(1, -1, 1, 1),
            ys.view(-1, 1, h, 1),
            xs.view(-1, 1, 1, w),
        ]


def as_batch(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader ``collate_fn`` for :class:`ImageBatches`: its batches come whole."""
    return batch
