"""kNN smoothing of class probabilities over ResNet-feature neighbours (IFSeg's post-processing).

Neighbours are global in feature space (cosine similarity of L2-normalised features), include
the cell itself, and probabilities are averaged over them ``iters`` times. Both backends are
EXACT searches (every pair of cells is scored); they differ in speed and in how equal scores
are ordered:

* ``torch`` - row-chunked ``matmul`` + ``torch.topk`` on CPU or CUDA: the reference's own
  operations, so its tie handling too (on CPU, among equal similarities the lowest cell index
  is kept, e.g. for cells with bit-identical features).
* ``faiss`` - ``IndexFlatIP`` inner-product search (on the GPU when faiss has GPU support and
  the features live on CUDA). Same neighbour sets wherever the k-th and (k+1)-th similarities
  differ by more than float32 rounding (~1e-6); among equal or near-equal similarities it may
  keep other, equally similar cells (its BLAS blocking rounds identical columns differently).

``auto`` picks :data:`DEFAULT_BACKEND` for the features' device (faiss on CPU when installed,
torch on CUDA): the fastest exact backend measured by ``benchmarks/knn_backends.py``.
Propagation is shared by both and is bit-identical to the reference's ``p[batch, nbr].mean(-2)``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import IFSegError
from ..tracing import capturing_graph

BACKENDS = ("auto", "torch", "faiss")
#: Similarity rows computed at once by the torch backend (bounds memory to ~rows * hw floats).
CHUNK_ROWS = 2048
#: Similarity of the padding columns of a captured graph: below every cosine similarity (>= -1).
PAD_SIMILARITY = -3.0
#: ``auto`` per device type, measured with ``benchmarks/knn_backends.py`` on the idle 2-core CPU:
#: both run the same float32 GEMM; faiss-cpu's search (OpenBLAS) took about 10-20 % less time
#: than torch's (MKL) on the 32x32 to 96x128 grids (on par at 32x43 in some runs), so CPU uses
#: faiss when it is installed (torch otherwise). CUDA: torch (cuBLAS + CUDA topk, the
#: reference's own ops); faiss-gpu could not be measured here.
DEFAULT_BACKEND = {"cpu": "faiss", "cuda": "torch"}

_gpu_resources = None


def normalize_features(features: Tensor) -> Tensor:
    """L2-normalise along the channel axis (eps 1e-12, as ``F.normalize``)."""
    return F.normalize(features.float(), dim=-1)


def neighbours_torch(features: Tensor, k: int) -> Tensor:
    """Indices ``(B, hw, k)`` of the ``k`` most cosine-similar cells (the cell itself included).

    Similarity rows are computed in chunks to bound memory. A graph being captured for export
    (where shapes are symbolic) gets one ``MatMul`` + ``TopK`` with a constant ``K`` (TensorRT
    takes ``K`` only as an initializer): the similarity rows are padded with ``k - 1`` columns
    of :data:`PAD_SIMILARITY`, so a grid of fewer than ``k`` cells picks all its cells and then
    padding, marked by indices ``>= hw``, which :func:`propagate` leaves out. That is the
    host's ``k = min(k, hw)`` (:func:`knn_smooth`) decided at run time.
    """
    f = normalize_features(features)
    ft = f.transpose(1, 2)
    if capturing_graph():
        return torch.topk(F.pad(torch.matmul(f, ft), (0, k - 1), value=PAD_SIMILARITY), k, dim=-1).indices
    rows = [
        torch.topk(torch.matmul(f[:, i : i + CHUNK_ROWS], ft), k, dim=-1).indices
        for i in range(0, f.shape[1], CHUNK_ROWS)
    ]
    return torch.cat(rows, dim=1)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_gpu_available() -> bool:
    """True when the installed faiss was built with CUDA and sees a GPU."""
    if not faiss_available():
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _faiss_gpu_index(faiss, dim: int, device: int):
    global _gpu_resources
    if _gpu_resources is None:  # allocating resources reserves GPU scratch memory: do it once
        _gpu_resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_gpu_resources, device, faiss.IndexFlatIP(dim))


def neighbours_faiss(features: Tensor, k: int) -> Tensor:
    """Same as :func:`neighbours_torch` through FAISS exact inner-product search."""
    try:
        import faiss
    except ImportError:
        raise IFSegError("knn_backend='faiss' needs faiss: pip install 'ifseg-deploy[cpu]' (or [gpu])") from None
    f = normalize_features(features)
    use_gpu = f.is_cuda and faiss_gpu_available()
    out = []
    for x in f.detach().cpu().numpy():
        x = np.ascontiguousarray(x, dtype=np.float32)
        index = _faiss_gpu_index(faiss, x.shape[1], f.device.index or 0) if use_gpu else faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        _, idx = index.search(x, k)
        out.append(torch.from_numpy(idx.astype(np.int64)))
    return torch.stack(out).to(features.device)


def propagate(probs: Tensor, neighbours: Tensor, iters: int) -> Tensor:
    """``iters`` times: each cell's probabilities become the mean over its neighbours'.

    ``probs`` ``(B, R, N)`` with ``R >= hw`` (extra rows, like the reference's eos row, are
    dropped by the first pass); ``neighbours`` ``(B, hw, k)``; returns ``(B, hw, N)``. In a
    captured graph, neighbour indices ``>= hw`` are padding (see :func:`neighbours_torch`):
    each cell then averages over its real neighbours only (all cells, when there are fewer than k).
    """
    b, hw, k = neighbours.shape
    rows, n = probs.shape[1], probs.shape[2]
    weights = None
    if capturing_graph():
        valid = neighbours < hw
        neighbours = neighbours * valid  # padding -> cell 0, with weight 0
        mask = valid.float()  # float sums: TensorRT reduces float tensors only
        weights = (mask / mask.sum(dim=-1, keepdim=True)).reshape(b * hw, k, 1)
    offsets = torch.arange(b, device=neighbours.device)[:, None, None]
    first = (neighbours + offsets * rows).reshape(-1)
    later = (neighbours + offsets * hw).reshape(-1)
    p = probs.reshape(b * rows, n)
    for i in range(iters):
        picked = p.index_select(0, first if i == 0 else later).view(b * hw, k, n)
        p = picked.mean(dim=1) if weights is None else (picked * weights).sum(dim=1)
    return p.view(b, hw, n) if iters else probs[:, :hw]


def resolve_backend(backend: str, device: Optional[torch.device] = None) -> str:
    """Check a backend name. ``auto`` becomes :data:`DEFAULT_BACKEND` of ``device`` (torch when
    that needs a faiss that is not installed); without a device it stays ``auto``, to be
    resolved per tensor by :func:`knn_smooth`."""
    if backend not in BACKENDS:
        raise IFSegError(f"unknown kNN backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if backend != "auto" or device is None:
        return backend
    choice = DEFAULT_BACKEND.get(device.type, "torch")
    usable = faiss_gpu_available() if device.type == "cuda" else faiss_available()
    return choice if choice != "faiss" or usable else "torch"


def knn_smooth(
    probs: Tensor,
    features: Tensor,
    k: int = 3,
    iters: int = 25,
    backend: str = "auto",
    neighbours: Optional[Tensor] = None,
) -> Tensor:
    """Smooth per-cell probabilities ``(B, hw, N)`` with feature-space neighbours; ``iters=0`` is a no-op."""
    if iters < 0 or k < 1:
        raise IFSegError(f"`k` must be >= 1 and `iters` >= 0 (got {k}, {iters})")
    if iters == 0:
        return probs
    if not capturing_graph():  # a captured graph caps k at run time (see neighbours_torch)
        k = min(k, features.shape[1])
    if neighbours is None:
        search = neighbours_faiss if resolve_backend(backend, features.device) == "faiss" else neighbours_torch
        neighbours = search(features, k)
    return propagate(probs, neighbours, iters)
