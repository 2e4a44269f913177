"""Artificial ("image-free") training images, generated on the training device without Python loops.

Reference recipe (``artificial_image_type=rand_k-1-33``), per sample: a coarse grid of
``sh x sw`` cells (each side uniform in ``1..S``), every cell an independent uniformly drawn
class (never "unknown"); the grid is nearest-resized to the model grid (the encoder input: one
word embedding per cell) and to ``16 x grid`` pixels (the per-pixel target). Nearest resizing
is PyTorch's legacy rule, source index ``floor(dst * in / out)``, computed exactly in integers.

Hierarchical classes: a cell first draws its class uniformly, then one of that class's words
uniformly; the cell's input is that word's embedding, its target the class.

A cell's input embedding is the mean of its word's token embeddings in the frozen token table
(the reference's ``EmbeddingBag(mode="mean")``), precomputed once per word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..text.categories_file import ClassSpec

#: Reference maximum coarse-grid side (``rand_k-1-33``: sides drawn from 1..32).
MAX_CELLS = 32


def stream_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from non-negative integer keys (e.g. ``(seed, stream, step)``)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def nearest_index(out_size: int, in_sizes: Tensor) -> Tensor:
    """Legacy-nearest source indices ``(B, out_size)`` for per-sample input sizes ``(B,)``."""
    dst = torch.arange(out_size, device=in_sizes.device)
    return (dst[None, :] * in_sizes[:, None]) // out_size


def cell_embeddings(word_embeds: Tensor, cell_words: Tensor) -> Tensor:
    """Encoder image tokens ``(B, g*g, C)`` of a grid of word ids ``(B, g, g)`` (raster order).

    With one word per class (``word_embeds`` = class embeddings) a reference batch's
    ``downsampled_category_32`` gives exactly the reference's embedding-bag "patch features".
    """
    return word_embeds[cell_words.flatten(1)]


@dataclass
class ArtificialLayout:
    """The random part of a batch: a word id per coarse cell and each sample's grid size."""

    words: Tensor  # (B, S, S) int64 word ids; only [:sh, :sw] of each sample is used
    sizes: Tensor  # (B, 2) int64 (sh, sw), each in 1..S

    def __getitem__(self, index: slice) -> "ArtificialLayout":
        return ArtificialLayout(self.words[index], self.sizes[index])


@dataclass
class ArtificialBatch:
    """Model inputs and targets of artificial samples."""

    cell_embeds: Tensor  # (B, grid*grid, C) raster order: the encoder's image tokens
    cell_classes: Tensor  # (B, grid, grid) int64 class per model-grid cell
    targets: Tensor  # (B, 16*grid, 16*grid) int64 class per pixel


class ArtificialImages:
    """Samples artificial batches for a list of classes from per-word embeddings.

    Args:
        classes: the output classes and their words (in the order of ``word_embeds``' rows).
        word_embeds: ``(W, C)`` mean token embedding of every word, class by class.
        grid: model grid side (the decoder's seg grid, 32 for IFSeg's 512-pixel setting).
        max_cells: largest coarse-grid side ``S``.
    """

    def __init__(self, classes: Sequence[ClassSpec], word_embeds: Tensor, grid: int = 32, max_cells: int = MAX_CELLS):
        counts = [len(c.words) for c in classes]
        if word_embeds.shape[0] != sum(counts):
            raise ValueError(f"{word_embeds.shape[0]} word embeddings for {sum(counts)} words")
        device = word_embeds.device
        self.word_embeds = word_embeds.detach()
        self.word_class = torch.repeat_interleave(
            torch.arange(len(classes), device=device), torch.tensor(counts, device=device)
        )
        self.counts = torch.tensor(counts, device=device)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.num_classes = len(classes)
        self.grid = grid
        self.target_size = 16 * grid
        self.max_cells = max_cells

    @property
    def device(self) -> torch.device:
        return self.word_embeds.device

    def sample_layout(self, batch_size: int, seed: int, rng_device: Optional[torch.device] = None) -> ArtificialLayout:
        """Grid sizes and cell words of ``batch_size`` samples from one seed.

        Random numbers come from a generator on ``rng_device`` (default: this generator's device;
        CPU and CUDA streams differ, so pass ``"cpu"`` for a device-independent layout).
        """
        dev = torch.device(rng_device) if rng_device is not None else self.device
        gen = torch.Generator(device=dev).manual_seed(seed)
        s = self.max_cells
        sizes = torch.randint(1, s + 1, (batch_size, 2), generator=gen, device=dev).to(self.device)
        cls = torch.randint(0, self.num_classes, (batch_size, s, s), generator=gen, device=dev).to(self.device)
        u = torch.rand((batch_size, s, s), generator=gen, device=dev).to(self.device)
        pick = torch.minimum((u * self.counts[cls]).long(), self.counts[cls] - 1)
        return ArtificialLayout(self.offsets[cls] + pick, sizes)

    def _resize(self, grid_values: Tensor, sizes: Tensor, out: int) -> Tensor:
        b = grid_values.shape[0]
        rows = nearest_index(out, sizes[:, 0])
        cols = nearest_index(out, sizes[:, 1])
        batch = torch.arange(b, device=grid_values.device)[:, None, None]
        return grid_values[batch, rows[:, :, None], cols[:, None, :]]

    def render(self, layout: ArtificialLayout) -> ArtificialBatch:
        """Cell embeddings, model-grid classes and pixel targets of a layout."""
        cell_words = self._resize(layout.words, layout.sizes, self.grid)
        classes = self.word_class[layout.words]
        return ArtificialBatch(
            cell_embeds=cell_embeddings(self.word_embeds, cell_words),
            cell_classes=self.word_class[cell_words],
            targets=self._resize(classes, layout.sizes, self.target_size),
        )
