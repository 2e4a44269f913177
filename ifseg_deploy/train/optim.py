"""The reference optimiser: fairseq's Adam (decoupled weight decay), cosine schedule, global-norm clipping.

fairseq's update differs from ``torch.optim.AdamW`` in where ``eps`` enters: fairseq adds it to
``sqrt(v)`` before the bias correction, torch after it (``sqrt(v / (1 - b2^t)) + eps``). With
``eps = 1e-8`` and small second moments the two diverge, so the fairseq rule is implemented here:

    p <- p - lr * wd * p
    p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
"""

from __future__ import annotations

import math
from typing import Iterable, Tuple

import torch
from torch import Tensor


class FairseqAdam(torch.optim.Optimizer):
    """Adam with decoupled weight decay on every parameter, exactly as fairseq's ``adam`` optimiser."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 5e-5,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
    ):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                grad = p.grad.to(p.dtype)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                step_size = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                if wd != 0:
                    p.add_(p, alpha=-wd * lr)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)
        return None


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """IFSeg's cosine schedule without warm-up: ``0.5 * lr * (1 + cos(pi * step / T))`` for update ``step``
    (0-based)."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / total_steps))
