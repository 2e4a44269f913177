"""One CUDA graph per input shape: captured on the first call of a shape, replayed afterwards.

A replay launches the whole forward pass as one graph, without Python or per-kernel launch cost.
A graph reads and writes fixed addresses, so each shape keeps static input buffers (the new
inputs are copied in) and static outputs (copied out, since the next replay overwrites them).
The capture itself is injected (:data:`Capture`), so the bookkeeping runs on CPU in tests with a
stand-in graph.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, List, Sequence, Set, Tuple

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: The work of one shape: reads the static inputs it was built on, returns its outputs.
Body = Callable[[], Sequence[Tensor]]
#: ``capture(body) -> (graph, static outputs)``: the graph's ``replay()`` reruns ``body``'s work.
Capture = Callable[[Body], Tuple[object, Sequence[Tensor]]]


def capture_cuda_graph(body: Body, warmup: int = 3) -> Tuple[torch.cuda.CUDAGraph, Sequence[Tensor]]:
    """Capture ``body`` as a :class:`torch.cuda.CUDAGraph` as the PyTorch documentation describes:
    ``warmup`` eager runs on a side stream (lazy initialisation, cuDNN / cuBLAS workspaces and
    algorithm choice happen there, not in the graph), then the capture. ``thread_local`` capture
    lets other threads (a streaming pipeline's pre-processing) keep using the GPU meanwhile.
    Returns the graph and the outputs it writes; raises whatever capture raises."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        outputs = body()
    return graph, outputs


@dataclass
class _Entry:
    graph: object
    inputs: List[Tensor]  # static input buffers the graph reads
    outputs: Sequence[Tensor]  # static outputs the graph writes
    body: Body  # kept alive: the graph reads whatever it holds (the shape's position biases)


class CudaGraphs:
    """Captured graphs by input signature (shape, dtype, device of every input), the ``max_graphs``
    most recently used kept (each holds its own memory pool). A signature whose capture fails runs
    eagerly from then on, with one log line.

    Not thread-safe: one backend runs one forward pass at a time.
    """

    def __init__(self, capture: Capture = capture_cuda_graph, max_graphs: int = 4):
        if max_graphs < 1:
            raise ValueError(f"max_graphs={max_graphs}: must be >= 1")
        self.capture = capture
        self.max_graphs = max_graphs
        self.graphs: "OrderedDict[Hashable, _Entry]" = OrderedDict()
        self.failed: Set[Hashable] = set()

    @staticmethod
    def signature(inputs: Sequence[Tensor]) -> Tuple[Tuple[Tuple[int, ...], torch.dtype, torch.device], ...]:
        """The key of a graph: ``(shape, dtype, device)`` of each input."""
        return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)

    def __call__(
        self, inputs: Sequence[Tensor], build: Callable[[Sequence[Tensor]], Body], extra: Hashable = None
    ) -> List[Tensor]:
        """The outputs of ``build(inputs)()``: by graph replay, capturing on the signature's first call.

        ``build(tensors)`` returns the work on ``tensors`` (called once per captured signature, on
        the static input buffers, and on every call of a signature that runs eagerly). ``extra``
        (hashable) is part of the signature: what else fixes the captured work (an output size).
        The outputs are fresh tensors, never the graph's buffers.
        """
        key = self.signature(inputs) + (() if extra is None else (extra,))
        if key in self.failed:
            return list(build(inputs)())
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(key, inputs, build)
            if entry is None:
                return list(build(inputs)())
            self.graphs[key] = entry
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        for static, new in zip(entry.inputs, inputs):
            static.copy_(new)
        entry.graph.replay()
        return [out.clone() for out in entry.outputs]

    def _capture(self, key: Hashable, inputs: Sequence[Tensor], build: Callable[[Sequence[Tensor]], Body]):
        static = [t.clone() for t in inputs]
        body = build(static)
        try:
            graph, outputs = self.capture(body)
        # capture support depends on the ops, the driver and the PyTorch release: any failure runs eagerly
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            log.warning(
                "CUDA graph capture failed for inputs %s (%s: %s); running them eagerly",
                [tuple(t.shape) for t in inputs],
                type(e).__name__,
                first,
            )
            self.failed.add(key)
            return None
        return _Entry(graph, static, outputs, body)
