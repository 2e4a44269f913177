"""Measured matrix-product peaks per precision on a device, and a network's share of them.

A row of ``bench --compare`` runs the network in one precision; its *peak share* is the
network's arithmetic rate (FLOPs of one forward pass, counted by ``torch.utils.flop_counter``,
over the measured network time) as a fraction of what one large square ``torch.mm`` reaches in
that precision on the same device. The peak is measured, not a datasheet figure: it is what
PyTorch's kernels (MKL / oneDNN on CPU, cuBLAS on CUDA) deliver on this machine at this load.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import torch

from ..config import ArchConfig
from ..errors import IFSegError
from ..runtime.torch_backend import cpu_has_bf16, tf32_policy

#: Precisions whose peak can be measured (``tf32``: CUDA only; ``int8``: ``torch._int_mm``, int32 sums).
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Matrix side per device type: large enough for the kernels' steady state, short on a 2-core CPU.
SIDE = {"cpu": 1024, "cuda": 8192}


def peak_unavailable(precision: str, device: torch.device) -> Optional[str]:
    """Why ``precision`` has no meaningful peak on ``device`` (None when it has one)."""
    if precision not in PRECISIONS:
        raise IFSegError(f"unknown precision={precision!r} for a matmul peak; choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "no bf16 on this GPU"
        return None
    if precision in ("tf32", "fp16"):
        return f"{precision} is a CUDA precision"
    if precision == "bf16" and not cpu_has_bf16():
        return "CPU without native bf16 (AVX512-BF16 / AMX)"
    return None


def matmul_peak(precision: str, device: torch.device, n: Optional[int] = None, repeats: int = 3) -> Optional[float]:
    """Operations per second (FLOP/s; int8: multiply-adds counted as 2 ops) of an ``n x n x n`` matrix
    product in ``precision`` on ``device``: the best of ``repeats`` timed runs after one warm-up.
    ``n`` defaults to :data:`SIDE` of the device type. None where :func:`peak_unavailable` says why.

    Raises:
        IFSegError: an unknown ``precision``; ``int8`` where this PyTorch has no ``torch._int_mm`` kernel.
    """
    if peak_unavailable(precision, device):
        return None
    n = n or SIDE.get(device.type, 1024)
    gen = torch.Generator().manual_seed(0)
    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen).to(device)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen).to(device)

        def product():
            return torch._int_mm(a, b)
    else:
        a = torch.randn(n, n, generator=gen).to(device, _DTYPES[precision])
        b = torch.randn(n, n, generator=gen).to(device, _DTYPES[precision])

        def product():
            return torch.mm(a, b)

    with tf32_policy(precision == "tf32" if precision in ("fp32", "tf32") else None):
        try:
            product()
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise IFSegError(f"precision={precision}: this PyTorch cannot multiply it on {device} ({first})") from None
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            product()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peaks(device: torch.device, precisions=PRECISIONS) -> Dict[str, Optional[float]]:
    """:func:`matmul_peak` of each precision on ``device`` (None where unavailable)."""
    return {p: matmul_peak(p, device) for p in precisions}


def network_flops(arch: ArchConfig, image_size: Tuple[int, int], prompt_len: int, classes: int) -> float:
    """FLOPs of one forward pass of a SegOFA of ``arch`` on one ``image_size`` ``(H, W)`` input with a
    prompt of ``prompt_len`` tokens and ``classes`` classes, counted by ``torch.utils.flop_counter``
    (matrix products and convolutions; a multiply-add is 2 FLOPs). The count does not depend on the
    weights: a fresh model on the ``meta`` device is traced (no memory, no arithmetic), in autograd
    mode as the counter's module tracker needs."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..model import SegOFA

    with torch.device("meta"):
        model = SegOFA(arch).eval()
        args = (
            torch.zeros(1, 3, *image_size),
            torch.zeros(1, prompt_len, arch.embed_dim),
            torch.zeros(classes, arch.embed_dim),
        )
    with FlopCounterMode(display=False) as counter:
        model(*args)
    return float(counter.get_total_flops())


def peak_share(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
    """``flops / seconds`` as a fraction of ``peak`` (FLOP/s); None without a peak or a time."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / peak
