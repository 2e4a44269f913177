"""Whether the model is being captured as a graph (the switch shared by the model, the
post-processing and the exporter)."""

from __future__ import annotations

import torch


def capturing_graph() -> bool:
    """True while the model is traced (the ONNX export uses the TorchScript tracer).

    Shapes are then symbolic: Python shortcuts that depend on them (identity resizes, range
    checks, chunked loops, branch choices) must give way to branch-free code that is right for
    every size.
    """
    return torch.jit.is_tracing()
