"""Dropout and drop-path (stochastic depth) whose masks can be drawn sample by sample.

Outside :func:`per_sample_masks` both draw from the global RNG, as ``nn.Dropout`` does. Inside
it, the masks of batch row ``i`` come from ``generators[i]`` only: a sample's masks then depend
on its own generator and on nothing else, in particular not on which other samples share its
batch, micro-batch or process. The trainer seeds one generator per global sample of an update
(:mod:`ifseg_deploy.train.trainer`), so one process and N processes draw the same masks.

The arithmetic is ``nn.Dropout``'s (``x * (mask / keep)``, ``mask ~ Bernoulli(keep)``) and
fairseq's ``DropPath`` (one keep/drop draw per sample, IFSeg's reference); every tensor these
modules see has the batch first.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

_GENERATORS: contextvars.ContextVar[Optional[List[torch.Generator]]] = contextvars.ContextVar(
    "sample_generators", default=None
)


@contextlib.contextmanager
def per_sample_masks(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Draw the masks of batch row ``i`` from ``generators[i]`` (on the tensors' device) inside the block."""
    token = _GENERATORS.set(list(generators))
    try:
        yield
    finally:
        _GENERATORS.reset(token)


def keep_mask(like: Tensor, shape: Tuple[int, ...], keep: float) -> Tensor:
    """A 0/1 mask of ``shape`` (batch first), dtype and device of ``like``, each entry 1 with probability ``keep``.

    Raises:
        ValueError: inside :func:`per_sample_masks` with a batch other than the number of generators.
    """
    generators = _GENERATORS.get()
    if generators is None:
        return like.new_empty(shape).bernoulli_(keep)
    if len(generators) != shape[0]:
        raise ValueError(f"a batch of {shape[0]} samples but {len(generators)} per-sample generators")
    return torch.stack([like.new_empty(shape[1:]).bernoulli_(keep, generator=g) for g in generators])


class Dropout(nn.Module):
    """Element-wise dropout on a batch-first tensor (training only); masks per :func:`keep_mask`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def mask_shape(self, x: Tensor) -> Tuple[int, ...]:
        return tuple(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * (keep_mask(x, self.mask_shape(x), keep) / keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropPath(Dropout):
    """Per-sample stochastic depth on a residual branch (training only): one mask value per sample."""

    def mask_shape(self, x: Tensor) -> Tuple[int, ...]:
        return (x.shape[0],) + (1,) * (x.dim() - 1)
