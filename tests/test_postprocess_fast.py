"""Up-sampling + argmax without full-resolution class maps (``cells``) gives the reference's labels
(``F.interpolate`` of every class, then argmax) bit for bit on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ifseg_deploy.postprocess.upsample as upsample
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.postprocess.upsample import source_weights, upsample_argmax


def reference(scores: torch.Tensor, grid, size) -> torch.Tensor:
    """The reference's rule, written out: every class up-sampled at once, then argmax."""
    b, _, n = scores.shape
    x = scores.transpose(1, 2).reshape(b, n, *grid)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).argmax(dim=1)


def regions(n: int, grid, seed: int, present: int = 4, sharp: float = 8.0, batch: int = 1) -> torch.Tensor:
    """Scores ``(B, h*w, N)`` shaped like a segmentation: a few classes in large regions, soft borders, noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, min(present, n), (batch, 1, 3, 4), generator=gen)
    onehot = torch.zeros(batch, n, 3, 4).scatter_(1, coarse, 1.0)
    logits = F.interpolate(onehot, size=grid, mode="bicubic", align_corners=False) * sharp
    logits = logits + 0.3 * torch.randn(batch, n, *grid, generator=gen)
    return logits.flatten(2).transpose(1, 2).contiguous()


@pytest.mark.parametrize("grid,size", [((32, 43), (480, 640)), ((32, 32), (512, 512)), ((7, 9), (101, 133))])
def test_source_weights_reproduce_pytorch_bilinear_bit_for_bit(grid, size):
    """The rounding the ``cells`` method relies on: its weights and fused multiply-adds give exactly
    the values of PyTorch's CPU kernel at image sizes (grid -> original image)."""
    x = torch.randn(2, 3, *grid, generator=torch.Generator().manual_seed(grid[0]))
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    i0, i1, a0, a1 = source_weights(grid[1], size[1])
    j0, j1, b0, b1 = source_weights(grid[0], size[0])
    cols = upsample._lerp(x[..., i0], x[..., i1], a0, a1)
    got = upsample._lerp(cols[:, :, j0], cols[:, :, j1], b0[:, None], b1[:, None])
    assert torch.equal(got, expected)
    assert upsample.matches_pytorch(grid, size)


def test_sizes_pytorch_rounds_otherwise_run_dense(monkeypatch):
    """PyTorch's kernel rounds some small outputs differently (its other loops): those sizes are
    found by the probe and take the dense path, so the labels stay the reference's."""
    grid, size = (8, 8), (64, 64)
    assert not upsample.matches_pytorch(grid, size)
    scores = regions(4, grid, seed=2)
    dense = []
    monkeypatch.setattr(upsample, "_dense", lambda *a: dense.append(1) or reference(scores, grid, size))
    upsample_argmax(scores, grid, size, method="cells")
    assert dense


@pytest.mark.parametrize(
    "grid,size,n",
    [((32, 43), (480, 640), 20), ((32, 32), (512, 512), 3), ((7, 9), (101, 133), 5), ((32, 43), (32, 43), 6)],
)
@pytest.mark.parametrize("softmax", [False, True])
def test_cells_labels_equal_reference(monkeypatch, grid, size, n, softmax):
    scores = regions(n, grid, seed=sum(size) + n)
    if softmax:  # smoothed probabilities in [0, 1], as after kNN; logits otherwise (iters=0)
        scores = scores.softmax(-1)
    monkeypatch.setattr(upsample, "_dense", lambda *a: pytest.fail("the cells shortcut fell back to dense"))
    got = upsample_argmax(scores, grid, size, method="cells")
    assert got.dtype == torch.int64 and got.shape == (1, *size)
    assert torch.equal(got, reference(scores, grid, size))


def test_cells_ties_keep_the_lowest_class():
    """Equal scores (a class duplicated, a flat map) resolve as argmax does: the lowest index wins."""
    grid, size = (8, 9), (77, 91)
    scores = regions(5, grid, seed=3)
    scores[..., 3] = scores[..., 1]  # classes 1 and 3 tie everywhere
    scores[:, :20] = 0.25  # a flat patch: every class ties
    got = upsample_argmax(scores, grid, size, method="cells")
    assert torch.equal(got, reference(scores, grid, size))
    assert not (got == 3).any()


def test_cells_batch_and_noise():
    """Images of a batch are independent; unstructured noise (no cell to share) still matches."""
    grid, size = (16, 12), (200, 150)
    batch = regions(7, grid, seed=5, batch=2)
    got = upsample_argmax(batch, grid, size, method="cells")
    assert torch.equal(got, reference(batch, grid, size))
    noise = torch.randn(1, 16 * 12, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(upsample_argmax(noise, grid, size, method="cells"), reference(noise, grid, size))


@pytest.mark.parametrize("size", [(5, 40), (3, 3)])
def test_outputs_smaller_than_the_grid_use_dense(size):
    grid = (8, 8)
    scores = regions(4, grid, seed=1)
    assert torch.equal(upsample_argmax(scores, grid, size), reference(scores, grid, size))


def test_unknown_method():
    with pytest.raises(IFSegError, match=r"^unknown up-sampling method='fast'; choose one of auto, dense, cells$"):
        upsample_argmax(torch.zeros(1, 4, 2), (2, 2), (4, 4), method="fast")
