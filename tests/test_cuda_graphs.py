"""The CUDA-only policies of the PyTorch backend, checked on any machine: the TF32 switches (readable
and settable on CPU-only builds) and the bookkeeping of CUDA-graph replay with a stand-in graph."""

from __future__ import annotations

import pytest
import torch
from conftest import SMALL_ARCH, make_tiny_model

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.runtime.torch_backend import TorchBackend, tf32_policy, tf32_switches


def tf32_values():
    return tuple(read() for read, _, _, _ in tf32_switches())


def inputs(arch, size=(64, 80), classes=3, prompt_len=5, batch=1):
    gen = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, 3, *size, generator=gen),
        torch.randn(1, prompt_len, arch.embed_dim, generator=gen),
        torch.randn(classes, arch.embed_dim, generator=gen),
    )


@pytest.mark.parametrize("allow", [False, True])
def test_tf32_policy_applies_and_restores(allow):
    before = tf32_values()
    with tf32_policy(allow):
        inside = tf32_values()
    assert inside == tuple((on if allow else off) for _, _, on, off in tf32_switches())
    assert tf32_values() == before
    with pytest.raises(RuntimeError), tf32_policy(allow):
        raise RuntimeError("restored on errors too")
    assert tf32_values() == before
    with tf32_policy(None):
        assert tf32_values() == before


def test_fp32_forward_runs_with_tf32_off(monkeypatch):
    """The user's process-wide TF32 choice is kept outside the forward pass and overridden inside it."""
    backend = TorchBackend(make_tiny_model(0, SMALL_ARCH))
    seen = []
    encoder_forward = type(backend.model.encoder).forward

    def recording(self, *args, **kwargs):
        seen.append(tf32_values())
        return encoder_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(backend.model.encoder), "forward", recording)
    switches = tf32_switches()
    user = tuple(on for _, _, on, _ in switches)  # a user who allows TF32 process-wide
    saved = tf32_values()
    try:
        for (_, write, _, _), value in zip(switches, user):
            write(value)
        backend.run(*inputs(SMALL_ARCH))
        assert tf32_values() == user
    finally:
        for (_, write, _, _), value in zip(switches, saved):
            write(value)
    assert seen == [tuple(off for _, _, _, off in switches)]


def test_tf32_needs_cuda():
    with pytest.raises(IFSegError, match=r"^precision=tf32 needs a CUDA device$"):
        TorchBackend(make_tiny_model(0, SMALL_ARCH), precision="tf32")


class StandInGraph:
    """Replays like a CUDA graph: reruns the captured work on the static inputs and writes the
    results into the static outputs (the addresses the real graph would write)."""

    def __init__(self, body, outputs):
        self.body, self.outputs, self.replays = body, outputs, 0

    def replay(self):
        self.replays += 1
        for out, new in zip(self.outputs, self.body()):
            out.copy_(new)


class StandInCapture:
    def __init__(self, fail_shapes=()):
        self.fail_shapes, self.captured = set(fail_shapes), []

    def __call__(self, body):
        outputs = body()  # a real capture records the work without running it; replay writes the values
        if tuple(outputs[0].shape) in self.fail_shapes:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        # unwritten buffers: NaN (integer outputs such as labels: -1), so a missed replay shows
        graph = StandInGraph(body, [torch.full_like(o, float("nan") if o.is_floating_point() else -1) for o in outputs])
        self.captured.append(graph)
        return graph, graph.outputs


def double_plus(calls):
    def build(tensors):
        x, y = tensors
        calls.append(tuple(x.shape))
        return lambda: (x * 2 + y.sum(),)

    return build


def test_one_graph_per_signature_replayed_with_fresh_outputs():
    from ifseg_deploy.runtime.cuda_graphs import CudaGraphs

    capture, builds = StandInCapture(), []
    graphs = CudaGraphs(capture, max_graphs=4)
    a, b = torch.randn(2, 3), torch.randn(4)
    first = graphs([a, b], double_plus(builds))[0]
    torch.testing.assert_close(first, a * 2 + b.sum())
    a2, b2 = torch.randn(2, 3), torch.randn(4)
    second = graphs([a2, b2], double_plus(builds))[0]
    torch.testing.assert_close(second, a2 * 2 + b2.sum())  # new inputs copied into the static buffers
    torch.testing.assert_close(first, a * 2 + b.sum())  # outputs are copies: a replay leaves them alone
    assert len(capture.captured) == 1 and capture.captured[0].replays == 2 and builds == [(2, 3)]
    a2.add_(1.0)
    assert not torch.equal(graphs.graphs[graphs.signature([a2, b2])].inputs[0], a2)  # static inputs are own copies
    graphs([torch.randn(2, 3, dtype=torch.float64), b], double_plus(builds))
    assert len(graphs.graphs) == 2  # another dtype is another graph


def test_lru_bound_and_recapture():
    from ifseg_deploy.runtime.cuda_graphs import CudaGraphs

    capture, builds = StandInCapture(), []
    graphs = CudaGraphs(capture, max_graphs=2)
    y = torch.randn(4)
    for n in (1, 2, 1, 3):  # 1 was used after 2, so 2 is the one dropped for 3
        graphs([torch.randn(n, 3), y], double_plus(builds))
    assert [key[0][0] for key in graphs.graphs] == [(1, 3), (3, 3)]
    graphs([torch.randn(2, 3), y], double_plus(builds))
    assert builds == [(1, 3), (2, 3), (3, 3), (2, 3)]  # an evicted shape is captured again
    with pytest.raises(ValueError, match="max_graphs=0"):
        CudaGraphs(capture, max_graphs=0)


def test_failed_capture_runs_eagerly_with_one_log_line(caplog):
    from ifseg_deploy.runtime.cuda_graphs import CudaGraphs

    capture, builds = StandInCapture(fail_shapes={(5, 3)}), []
    graphs = CudaGraphs(capture)
    y = torch.randn(4)
    with caplog.at_level("WARNING", logger="ifseg_deploy.runtime.cuda_graphs"):
        outs = [graphs([x, y], double_plus(builds))[0] for x in (torch.randn(5, 3), torch.randn(5, 3))]
        graphs([torch.randn(1, 3), y], double_plus(builds))
    assert all(torch.isfinite(out).all() for out in outs)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "CUDA graph capture failed for inputs [(5, 3), (4,)]" in lines[0]
    assert "RuntimeError: operation not permitted when stream is capturing" in lines[0] and "\n" not in lines[0]
    assert graphs.signature([torch.randn(5, 3), y]) in graphs.failed and len(graphs.graphs) == 1
    assert builds == [(5, 3), (5, 3), (5, 3), (1, 3)]  # the capture's build, then one eager build per call


def test_backend_replays_graphs_only_on_cuda(monkeypatch):
    """The backend's graph path, on CPU with the stand-in capture: the same logits as eager, one
    capture per input size; the CPU default never makes a graph."""
    from ifseg_deploy.runtime.cuda_graphs import CudaGraphs

    model = make_tiny_model(3, SMALL_ARCH)
    eager = TorchBackend(model)
    assert eager.graphs is None and eager.capabilities.stages == ("backbone", "encoder", "decoder")
    graphed = TorchBackend(model)
    capture = StandInCapture()
    graphed.graphs = CudaGraphs(capture)
    for size in ((64, 80), (48, 48), (64, 80)):
        x = inputs(SMALL_ARCH, size)
        torch.testing.assert_close(graphed.run(*x).logits, eager.run(*x).logits, rtol=0, atol=0)
    assert len(capture.captured) == 2 and [g.replays for g in capture.captured] == [2, 1]
    # the body holds its shape's position biases: evicting them from the model's cache changes nothing
    graphed.model._bias_cache._entries.clear()
    x = inputs(SMALL_ARCH, (48, 48))
    torch.testing.assert_close(graphed.run(*x).logits, eager.run(*x).logits, rtol=0, atol=0)


def test_cli_maps_no_cuda_graph_and_tf32():
    import argparse

    from ifseg_deploy.cli.common import precision_options
    from ifseg_deploy.cli.flags import flag_names
    from ifseg_deploy.cli.main import build_parser

    args = build_parser().parse_args(["bench", "--arch", "tiny", "--no-cuda-graph", "--precision", "tf32"])
    assert precision_options("torch", args) == ("tf32", {"cuda_graph": False})
    assert precision_options("torch", build_parser().parse_args(["bench", "--arch", "tiny"])) == (None, {})
    plain = dict(half=False, compile=False)
    with pytest.raises(IFSegError, match="^--no-cuda-graph applies to PyTorch checkpoints"):
        precision_options("onnxruntime", argparse.Namespace(precision=None, cuda_graph=False, **plain))
    with pytest.raises(IFSegError, match="^--precision tf32 applies to PyTorch checkpoints on CUDA"):
        precision_options("openvino", argparse.Namespace(precision="tf32", **plain))
    assert flag_names("cuda_graph=False: ...") == "--no-cuda-graph: ..."


def test_torch_compile_traces_through_the_bias_cache():
    """``torch.compile`` of the model (the bias cache is bypassed while tracing: no Python-side keys
    reach dynamo) runs two input sizes and matches eager; the eager cache still serves hits."""
    model = make_tiny_model(2, SMALL_ARCH)
    compiled = torch.compile(model, backend="eager", fullgraph=False)
    with torch.inference_mode():
        for size in ((64, 80), (48, 48)):
            x = inputs(SMALL_ARCH, size)
            torch.testing.assert_close(compiled(*x)[0], model(*x)[0], rtol=1e-5, atol=1e-5)
        first = model.position_biases((3, 3), 5)
        assert model.position_biases((3, 3), 5) is first
        model.half()
        assert model.position_biases((3, 3), 5)[0][0].dtype == torch.float16  # a dtype change is a new key


def test_tf32_policy_nests_and_overlaps():
    """Nested blocks restore the outer block's choice; blocks left out of order (threads) end with the
    caller's values."""
    before = tf32_values()
    allowed = tuple(on for _, _, on, _ in tf32_switches())
    off = tuple(o for _, _, _, o in tf32_switches())
    with tf32_policy(True):
        with tf32_policy(False):
            assert tf32_values() == off
        assert tf32_values() == allowed
    assert tf32_values() == before
    first, second = tf32_policy(True), tf32_policy(False)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first block leaves before the second
    assert tf32_values() == off
    second.__exit__(None, None, None)
    assert tf32_values() == before


@pytest.mark.parametrize("knn_iters", [0, 3])
def test_fused_graph_equals_the_unfused_segmenter(tiny_bundle, bpe_dir, knn_iters):
    """Network + kNN + up-sampling + argmax as one graph body (run on CPU under the stand-in capture)
    gives the host path's probabilities and labels; one graph per input and output size."""
    import numpy as np

    from ifseg_deploy.runtime.cuda_graphs import CudaGraphs
    from ifseg_deploy.runtime.segmenter import Segmenter

    kwargs = dict(bpe_dir=bpe_dir, device="cpu", knn_iters=knn_iters, knn_backend="torch")
    eager = Segmenter.load(tiny_bundle, **kwargs)
    assert not eager.backend.fused  # no graphs on CPU: nothing fused
    fused = Segmenter.load(tiny_bundle, **kwargs)
    capture = StandInCapture()
    fused.backend.graphs = CudaGraphs(capture)
    fused.backend.fuse_postprocess((fused.knn_k, knn_iters) if knn_iters else None)
    assert fused.backend.capabilities.upsample
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((90, 130, 3), (90, 130, 3), (70, 70, 3))]
    for image in images:
        want, got = eager.segment(image), fused.segment(image)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-6)
        assert got.labels.dtype == np.int64
        assert "knn" not in got.timings and ("knn" in want.timings) == bool(knn_iters)  # kNN ran in the graph
    assert len(capture.captured) == 2 and [g.replays for g in capture.captured] == [2, 1]

    # the graph's outputs when the caller smooths the probabilities itself: the host path takes over
    def host_labels(seg):
        batch = seg.preprocess([images[0]])
        return seg.postprocess(batch, seg.infer(batch), lambda p, f: p * 1.0)[0].labels

    np.testing.assert_array_equal(host_labels(fused), host_labels(eager))


def test_frame_outputs_knn_with_faiss_stays_on_the_host(tiny_bundle, bpe_dir):
    """A kNN backend other than the graph's (faiss) keeps kNN on the host: the graph smooths nothing."""
    from ifseg_deploy.postprocess.knn import faiss_available
    from ifseg_deploy.runtime.cuda_graphs import CudaGraphs
    from ifseg_deploy.runtime.segmenter import Segmenter

    if not faiss_available():
        pytest.skip("faiss is not installed (pip install 'ifseg-deploy[cpu]')")
    seg = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, device="cpu", knn_iters=2, knn_backend="faiss")
    seg.backend.graphs = CudaGraphs(StandInCapture())
    Segmenter(seg.backend, seg.vocabulary, knn_iters=2, knn_backend="faiss")
    assert seg.backend.fused and seg.backend.capabilities.knn is None
