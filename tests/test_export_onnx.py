"""ONNX export of tiny models built here: graph rules, ORT vs PyTorch parity (square, non-square,
position-table branches, two category lists, in-graph post-processing), refusal, runtime backend."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_ARCH, make_tiny_model

from ifseg_deploy.checkpoint import LoadedModel
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.args import ExportArgs
from ifseg_deploy.exporter.onnx import writer as onnx_export
from ifseg_deploy.exporter.onnx.verify import graph_policy_problems
from ifseg_deploy.exporter.onnx.writer import read_onnx_metadata, write_onnx
from ifseg_deploy.exporter.tensorrt.ops import check_graph
from ifseg_deploy.postprocess.knn import knn_smooth
from ifseg_deploy.postprocess.upsample import upsample_argmax
from ifseg_deploy.preprocess import Preprocessing
from ifseg_deploy.runtime.onnx_backend import OnnxBackend
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.runtime.sidecar import read_vocab, vocab_path
from ifseg_deploy.runtime.torch_backend import TorchBackend
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.tokenizer import OFATokenizer

CATS = ["grass", "cat", "concrete wall"]
OTHER = ["sky", "dog", "traffic light", "tree", "road"]


@pytest.fixture(scope="module")
def tiny(bpe_dir):
    model = make_tiny_model(3)
    class_embeds = torch.randn(len(CATS), TINY_ARCH.embed_dim, generator=torch.Generator().manual_seed(1))
    loaded = LoadedModel(model, "bundle", "tiny.safetensors", list(CATS), class_embeds)
    vocab = Vocabulary(OFATokenizer(bpe_dir), model.embed_tokens.weight, loaded.prompt_prefix, CATS, class_embeds)
    return loaded, vocab


@pytest.fixture(scope="module")
def dynamic_export(tiny, tmp_path_factory):
    """Dynamic graph with in-graph kNN and up-sampling, exported with a list other than the model's own."""
    loaded, vocab = tiny
    out = str(tmp_path_factory.mktemp("dyn") / "tiny.onnx")
    args = ExportArgs(
        categories=OTHER[:2],
        imgsz=64,
        image_size=(64, 80),
        knn="in-graph",
        knn_k=3,
        knn_iters=25,
        upsample="in-graph",
        position_biases="graph",
    )
    return write_onnx(loaded, out, vocab, args)


@pytest.fixture(scope="module")
def static_export(tiny, tmp_path_factory):
    loaded, vocab = tiny
    out = str(tmp_path_factory.mktemp("static") / "tiny_static.onnx")
    return write_onnx(loaded, out, vocab, ExportArgs(imgsz=(48, 64), batch=2))


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def dynamic_session(dynamic_export):
    return _session(dynamic_export.path)


def _torch(loaded, images, vocab):
    with torch.inference_mode():
        return loaded.model(images, vocab.prompt_embeds, vocab.class_embeds)


def test_graph_rules_and_metadata(dynamic_export):
    model = onnx.load(dynamic_export.path)
    assert graph_policy_problems(model) == []
    ops = {n.op_type for n in model.graph.node}
    assert "Loop" not in ops
    assert "Scan" not in ops
    assert "LayerNormalization" in ops
    assert "TopK" in ops
    assert "Resize" in ops
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # the vocabulary is an input and the token table is NOT a constant of the graph
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs["prompt_embeds"] == [1, "prompt_len", TINY_ARCH.embed_dim]
    assert inputs["class_embeds"] == ["classes", TINY_ARCH.embed_dim]
    assert inputs["images"] == ["batch", 3, "height", "width"]
    assert all(list(i.dims) != [TINY_ARCH.vocab_size, TINY_ARCH.embed_dim] for i in model.graph.initializer)
    meta = read_onnx_metadata(dynamic_export.path)
    assert meta["export"]["categories"] == OTHER[:2]
    assert meta["categories"] == CATS
    assert meta["preprocessing"]["short_side"] == 64
    assert meta["export"]["graph"]["knn"] == "in-graph"
    props = {p.key: p.value for p in model.metadata_props}
    assert props["categories"] == "sky, dog"
    assert json.loads(props["preprocessing"])["mean"] == 0.5
    assert check_graph(model, "10").ok
    assert check_graph(model, "8.6").ok


def test_graph_policy_flags_bad_graphs():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    inf = helper.make_tensor("c", TensorProto.FLOAT, [2], [0.0, float("-inf")])
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [inf],
    )
    problems = graph_policy_problems(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert any("opset 13" in p for p in problems)
    assert any("inf/NaN" in p for p in problems)
    assert any("LayerNormalization" in p for p in problems)


def test_sidecar_roundtrip(dynamic_export, tiny):
    loaded, _ = tiny
    side = read_vocab(dynamic_export.path)
    assert dynamic_export.vocab_path == vocab_path(dynamic_export.path)
    assert torch.equal(side.embed_table, loaded.model.embed_tokens.weight.detach())
    assert torch.equal(side.class_embeds, loaded.class_embeds)
    assert side.categories == CATS
    assert side.arch == TINY_ARCH


@pytest.mark.parametrize("size", [(64, 64), (48, 112), (112, 48), (32, 720), (528, 544)])
def test_dynamic_parity_any_size(dynamic_session, tiny, size):
    """One file, any size: square, non-square, a 2x45 grid (position ids past the 42-wide row) and a
    33x34 grid (> 1024 cells: the encoder position table is resized instead of looked up)."""
    loaded, vocab = tiny
    session = dynamic_session
    v = vocab.prepare(OTHER[:4])
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[0])) * 2 - 1
    feeds = {
        "images": images.numpy(),
        "prompt_embeds": v.prompt_embeds.numpy(),
        "class_embeds": v.class_embeds.numpy(),
        "output_size": np.array([size[0] * 2, size[1] * 2 + 3], dtype=np.int64),
    }
    logits, feats, knn_probs, labels = session.run(None, feeds)
    ref_logits, ref_feats = _torch(loaded, images, v)
    scale = float(ref_feats.abs().max())
    assert np.abs(logits - ref_logits.numpy()).max() < 2e-4
    assert np.abs(feats - ref_feats.numpy()).max() < 1e-5 * scale
    ref_knn = knn_smooth(torch.softmax(ref_logits, -1), ref_feats, 3, 25)
    assert np.abs(knn_probs - ref_knn.numpy()).max() < 1e-4
    grid = ((size[0] - 1) // 16 + 1, (size[1] - 1) // 16 + 1)
    ref_labels = upsample_argmax(ref_knn, grid, (size[0] * 2, size[1] * 2 + 3)).numpy()
    assert labels.shape == ref_labels.shape
    assert (labels == ref_labels).mean() > 0.999


def test_one_file_two_category_lists(dynamic_session, tiny):
    """The same ONNX file with two different vocabularies matches PyTorch with each."""
    loaded, vocab = tiny
    session = dynamic_session
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(7)) * 2 - 1
    results = []
    for cats in (CATS, OTHER):
        v = vocab.prepare(cats)
        out = session.run(
            ["logits"],
            {
                "images": images.numpy(),
                "prompt_embeds": v.prompt_embeds.numpy(),
                "class_embeds": v.class_embeds.numpy(),
                "output_size": np.array([64, 96]),
            },
        )[0]
        ref = _torch(loaded, images, v)[0].numpy()
        assert out.shape == (2, 24, len(cats))
        assert np.abs(out - ref).max() < 2e-4
        assert (out.argmax(-1) == ref.argmax(-1)).all()
        results.append(out)
    assert results[0].shape != results[1].shape


def test_static_export_folds_biases_and_keeps_vocab_dynamic(static_export, tiny):
    loaded, vocab = tiny
    model = onnx.load(static_export.path)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs["images"] == [2, 3, 48, 64]
    assert inputs["class_embeds"] == ["classes", TINY_ARCH.embed_dim]
    # the decoder self-attention bias (heads, 1 + hw, 1 + hw) is a folded constant, not computed at run time
    cells = 3 * 4 + 1
    assert any(list(i.dims)[-3:] == [TINY_ARCH.heads, cells, cells] for i in model.graph.initializer)
    assert "Trilu" not in {n.op_type for n in model.graph.node}
    session = _session(static_export.path)
    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for cats in (CATS, OTHER):
        v = vocab.prepare(cats)
        out = session.run(
            ["logits"],
            {
                "images": images.numpy(),
                "prompt_embeds": v.prompt_embeds.numpy(),
                "class_embeds": v.class_embeds.numpy(),
            },
        )[0]
        assert np.abs(out - _torch(loaded, images, v)[0].numpy()).max() < 2e-4


@pytest.mark.parametrize("knn_iters", [0, 25])
def test_disagreeing_export_is_not_written(tiny, tmp_path, monkeypatch, knn_iters):
    """An exporter that traces something other than the verified model: refused, no file, no temp file
    (with in-graph kNN too, whose near-tie allowance must not hide a different network)."""
    loaded, vocab = tiny
    real_trace = onnx_export._trace
    other = make_tiny_model(11)

    def wrong_trace(graph, feeds, path, opts):
        real_trace(type(graph)(other, graph.contract).eval(), feeds, path, opts)

    monkeypatch.setattr(onnx_export, "_trace", wrong_trace)
    out = tmp_path / "bad.onnx"
    with pytest.raises(IFSegError, match="disagrees with PyTorch.*not written"):
        write_onnx(
            loaded,
            str(out),
            vocab,
            ExportArgs(
                imgsz=32,
                slim=False,
                knn="in-graph" if knn_iters else "host",
                knn_iters=knn_iters,
                position_biases="graph",
            ),
        )
    assert os.listdir(tmp_path) == []


def test_disagreeing_in_graph_knn_is_not_written(tiny, tmp_path, monkeypatch):
    """Same network, other kNN smoothing in the graph (k = 4 traced, k = 3 verified): logits and
    features agree, the smoothed probabilities of the cells with determined neighbours do not."""
    loaded, vocab = tiny
    real_trace = onnx_export._trace

    def wrong_trace(graph, feeds, path, opts):
        real_trace(type(graph)(graph.model, dataclasses.replace(graph.contract, knn_k=4)).eval(), feeds, path, opts)

    monkeypatch.setattr(onnx_export, "_trace", wrong_trace)
    with pytest.raises(IFSegError, match="disagrees with PyTorch on .*knn_probs.*not written"):
        write_onnx(
            loaded,
            str(tmp_path / "bad.onnx"),
            vocab,
            ExportArgs(imgsz=48, image_size=(48, 64), slim=False, knn="in-graph", position_biases="graph"),
        )
    assert os.listdir(tmp_path) == []


def test_in_graph_knn_caps_k_at_the_cell_count(tiny, tmp_path):
    """k = 200 in the graph: a grid with fewer cells averages over all of them, as the host's
    min(k, cells); a larger grid keeps 200 neighbours. TopK's K stays a constant (TensorRT)."""
    loaded, vocab = tiny
    export = write_onnx(
        loaded,
        str(tmp_path / "k200.onnx"),
        vocab,
        ExportArgs(imgsz=64, image_size=(64, 80), knn="in-graph", knn_k=200, knn_iters=5, position_biases="graph"),
    )
    model = onnx.load(export.path)
    assert check_graph(model, "10").ok
    assert check_graph(model, "8.6").ok
    v = vocab.prepare(CATS)
    classes = v.class_embeds * 0.1  # flatter logits: probabilities that differ between cells
    backend, _ = OnnxBackend.open(export.path, device="cpu")
    for size in [(16, 16), (32, 48), (96, 112)]:  # 1, 6 and 42 cells: all fewer than 200
        images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(size[1])) * 2 - 1
        out = backend.run(images, v.prompt_embeds, classes)
        probs = torch.softmax(out.logits, -1)  # after one pass, every cell holds the mean over all cells
        assert torch.allclose(out.knn_probs, probs.mean(1, keepdim=True).expand_as(probs), atol=1e-6)
    session = _session(export.path)
    images = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(5)) * 2 - 1  # 225 cells > 200
    logits, feats, knn_probs = session.run(
        None, {"images": images.numpy(), "prompt_embeds": v.prompt_embeds.numpy(), "class_embeds": classes.numpy()}
    )
    ref = knn_smooth(torch.softmax(torch.from_numpy(logits), -1), torch.from_numpy(feats), 200, 5, backend="torch")
    assert np.abs(knn_probs - ref.numpy()).max() < 1e-5
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    assert np.abs(knn_probs - probs.mean(1, keepdims=True)).max() > 1e-3  # not the all-cells mean


def test_onnx_backend_segmenter_matches_torch(dynamic_export, tiny, bpe_dir, tmp_path):
    """Segmenter.load of an .onnx (side file + BPE) gives the PyTorch Segmenter's outputs; IO binding on CPU too."""
    loaded, vocab = tiny
    rgb = (np.random.default_rng(0).random((40, 70, 3)) * 255).astype(np.uint8)
    seg = Segmenter.load(
        dynamic_export.path, CATS, bpe_dir=bpe_dir, device="cpu", preprocessing=Preprocessing.short_side_rule(64)
    )
    ref = Segmenter(TorchBackend(loaded.model), vocab, CATS, preprocessing=Preprocessing.short_side_rule(64))
    a, b = seg.segment(rgb), ref.segment(rgb)
    assert a.logits.shape == b.logits.shape == (4, 7, 3)
    assert np.abs(a.logits - b.logits).max() < 2e-4
    assert np.abs(a.probs - b.probs).max() < 1e-4
    assert (a.labels == b.labels).all()
    assert a.categories == CATS
    # The graph's kNN (k=3, 25 iterations) serves matching settings; other settings smooth on the host.
    assert "network" in a.timings
    assert "knn" not in a.timings
    assert "backbone" not in a.timings
    few = Segmenter.load(
        dynamic_export.path,
        CATS,
        bpe_dir=bpe_dir,
        device="cpu",
        preprocessing=Preprocessing.short_side_rule(64),
        knn_iters=5,
    )
    c, d = (
        few.segment(rgb),
        Segmenter(
            TorchBackend(loaded.model), vocab, CATS, knn_iters=5, preprocessing=Preprocessing.short_side_rule(64)
        ).segment(rgb),
    )
    assert "knn" in c.timings
    assert np.abs(c.probs - d.probs).max() < 1e-4
    assert np.abs(c.probs - a.probs).max() > 1e-4
    bound, _ = OnnxBackend.open(dynamic_export.path, device="cpu", providers=["cpu"], io_binding=True)
    v = vocab.prepare(OTHER)
    images = torch.rand(3, 3, 64, 48) * 2 - 1
    outs = bound.run(images, v.prompt_embeds, v.class_embeds, output_size=(70, 50))
    assert outs.labels.shape == (3, 70, 50)
    assert outs.labels.dtype == torch.int64
    assert torch.allclose(outs.logits, _torch(loaded, images, v)[0], atol=2e-4)


def test_static_backend_adapts_batches(static_export, tiny):
    """A batch-2 static graph serves 1 or 3 images (padded / split) and rejects other image sizes."""
    loaded, vocab = tiny
    backend, _ = OnnxBackend.open(static_export.path, device="cpu")
    v = vocab.prepare(CATS)
    images = torch.rand(3, 3, 48, 64) * 2 - 1
    out = backend.run(images, v.prompt_embeds, v.class_embeds)
    logits, feats = out.logits, out.features
    assert logits.shape == (3, 12, 3)
    assert feats.shape == (3, 12, 1024)
    assert torch.allclose(logits, _torch(loaded, images, v)[0], atol=2e-4)
    with pytest.raises(IFSegError, match="fixed 48x64 inputs.*dynamic=True"):
        backend.run(torch.zeros(1, 3, 64, 64), v.prompt_embeds, v.class_embeds)


def test_onnx_backend_provider_errors(static_export):
    with pytest.raises(IFSegError, match="lacks CUDAExecutionProvider"):
        OnnxBackend.open(static_export.path, device="cpu", providers=["cuda"])
    with pytest.raises(IFSegError, match="precision=fp16 .*providers=tensorrt"):
        OnnxBackend.open(static_export.path, device="cpu", providers=["cpu"], precision="fp16")
