"""kNN smoothing of class probabilities over ResNet-feature neighbours (IFSeg's post-processing).

Neighbours are global in feature space (cosine similarity of L2-normalised features), include
the cell itself, and probabilities are averaged over them ``iters`` times. Backends:

* ``torch``  - chunked ``matmul`` + ``topk`` (CPU or CUDA); identical to the reference's
  ``torch.topk`` including its tie order.
* ``faiss``  - exact inner-product search (``IndexFlatIP``; on the GPU when faiss has GPU
  support and the features live on CUDA). Same neighbours except where the 3rd and 4th
  cosine similarities tie within float rounding (~1e-6).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import IFSegError

BACKENDS = ("auto", "torch", "faiss")
#: Similarity rows computed at once by the torch backend (bounds memory to ~rows * hw floats).
CHUNK_ROWS = 2048


def normalize_features(features: Tensor) -> Tensor:
    """L2-normalise along the channel axis (eps 1e-12, as ``F.normalize``)."""
    return F.normalize(features.float(), dim=-1)


def neighbours_torch(features: Tensor, k: int) -> Tensor:
    """Indices ``(B, hw, k)`` of the ``k`` most cosine-similar cells (the cell itself included)."""
    f = normalize_features(features)
    rows = [torch.topk(torch.matmul(f[:, i : i + CHUNK_ROWS], f.transpose(1, 2)), k, dim=-1).indices for i in range(0, f.shape[1], CHUNK_ROWS)]
    return torch.cat(rows, dim=1)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def neighbours_faiss(features: Tensor, k: int) -> Tensor:
    """Same as :func:`neighbours_torch` through FAISS exact inner-product search."""
    try:
        import faiss
    except ImportError:
        raise IFSegError("--knn-backend faiss needs faiss: pip install 'ifseg-deploy[cpu]' (or [gpu])") from None
    f = normalize_features(features)
    use_gpu = f.is_cuda and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    out = []
    for x in f.detach().cpu().numpy():
        x = np.ascontiguousarray(x, dtype=np.float32)
        index = faiss.IndexFlatIP(x.shape[1])
        if use_gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), f.device.index or 0, index)
        index.add(x)
        _, idx = index.search(x, k)
        out.append(torch.from_numpy(idx.astype(np.int64)))
    return torch.stack(out).to(features.device)


def propagate(probs: Tensor, neighbours: Tensor, iters: int) -> Tensor:
    """``iters`` times: each cell's probabilities become the mean over its neighbours'. ``(B, hw, N)``."""
    b, hw, k = neighbours.shape
    batch = torch.arange(b, device=probs.device)[:, None, None]
    for _ in range(iters):
        probs = probs[batch, neighbours].mean(dim=2)
    return probs


def resolve_backend(backend: str) -> str:
    """``auto`` -> the fastest exact backend available (measured: see README)."""
    if backend not in BACKENDS:
        raise IFSegError(f"unknown kNN backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    return "torch" if backend == "auto" else backend


def knn_smooth(
    probs: Tensor, features: Tensor, k: int = 3, iters: int = 25, backend: str = "auto", neighbours: Optional[Tensor] = None
) -> Tensor:
    """Smooth per-cell probabilities ``(B, hw, N)`` with feature-space neighbours; ``iters=0`` is a no-op."""
    if iters < 0 or k < 1:
        raise IFSegError(f"--knn-k must be >= 1 and --knn-iters >= 0 (got {k}, {iters})")
    if iters == 0:
        return probs
    k = min(k, features.shape[1])
    if neighbours is None:
        neighbours = neighbours_faiss(features, k) if resolve_backend(backend) == "faiss" else neighbours_torch(features, k)
    return propagate(probs, neighbours, iters)
