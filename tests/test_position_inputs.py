"""Dynamic graphs that take their position biases as inputs: the graph's interface, the side file's
position weights, parity with PyTorch at any size through the runtime backends, biases computed
once per input shape (not per frame), and the formats that refuse such graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import TINY_ARCH, make_tiny_model

from ifseg_deploy.checkpoint import LoadedModel
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.api import export_model
from ifseg_deploy.exporter.args import ExportArgs, validate
from ifseg_deploy.exporter.onnx.writer import write_onnx
from ifseg_deploy.model.encoder import Encoder
from ifseg_deploy.runtime.onnx_backend import OnnxBackend
from ifseg_deploy.runtime.sidecar import read_vocab
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.tokenizer import OFATokenizer

CATS = ["grass", "cat", "concrete wall"]


@pytest.fixture(scope="module")
def tiny(bpe_dir):
    model = make_tiny_model(4)
    with torch.no_grad():  # position tables far from their init, so a wrong bias shows in the logits
        for name, p in model.named_parameters():
            if "rel_pos_table" in name or "pos_" in name:
                p.normal_(0, 0.5)
    class_embeds = torch.randn(len(CATS), TINY_ARCH.embed_dim, generator=torch.Generator().manual_seed(2))
    loaded = LoadedModel(model, "bundle", "tiny.safetensors", list(CATS), class_embeds)
    return loaded, Vocabulary(
        OFATokenizer(bpe_dir), model.embed_tokens.weight, loaded.prompt_prefix, CATS, class_embeds
    )


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    loaded, vocab = tiny
    out = str(tmp_path_factory.mktemp("bias") / "tiny.onnx")
    return write_onnx(loaded, out, vocab, ExportArgs(imgsz=64, image_size=(64, 80), position_biases="inputs"))


def _torch_logits(loaded, images, v):
    with torch.inference_mode():
        return loaded.model(images, v.prompt_embeds, v.class_embeds)[0]


def test_graph_takes_biases_and_side_file_has_their_weights(exported, tiny):
    loaded, _ = tiny
    model = onnx.load(exported.path)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    a = TINY_ARCH
    assert dims["encoder_bias"] == [a.encoder_layers, a.heads, "tokens", "tokens"]
    assert dims["decoder_bias"] == [a.decoder_layers, a.heads, "targets", "targets"]
    assert dims["cross_bias"] == [a.heads, "targets", "tokens"]
    # no relative-position table is a constant of the graph any more: they live in the side file
    table = loaded.model.encoder.image_rel_pos_table_list[0].weight
    assert all(list(i.dims) != list(table.shape) for i in model.graph.initializer)
    side = read_vocab(exported.path)
    assert torch.equal(side.positions["encoder.image_rel_pos_table_list.0.weight"], table.detach())
    assert set(side.positions) == {
        k
        for k in loaded.model.state_dict()
        if k.split(".")[0] in ("encoder", "decoder")
        and k.split(".")[1] in Encoder.POSITION_MODULES + type(loaded.model.decoder).POSITION_MODULES
    }
    assert side.contract.bias_inputs == (a.encoder_layers, a.decoder_layers, a.heads)


@pytest.mark.parametrize("size", [(64, 80), (48, 112), (112, 48), (528, 544)])
def test_backend_matches_pytorch_at_any_size(exported, tiny, size):
    """Square, non-square both ways, and a 33x34 grid (> 1024 cells: resized position tables)."""
    loaded, vocab = tiny
    backend, _ = OnnxBackend.open(exported.path, device="cpu")
    v = vocab.prepare(["sky", "dog", "tree", "road"])
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[1])) * 2 - 1
    out = backend.run(images, v.prompt_embeds, v.class_embeds).logits
    ref = _torch_logits(loaded, images, v)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 2e-4 * max(1.0, float(ref.abs().max()))


def test_biases_computed_once_per_shape(exported, tiny, monkeypatch):
    loaded, vocab = tiny
    backend, _ = OnnxBackend.open(exported.path, device="cpu")
    calls = []
    encoder = backend.positions.encoder
    original = encoder.position_biases
    monkeypatch.setattr(encoder, "position_biases", lambda size, n: calls.append((tuple(size), n)) or original(size, n))
    v = vocab.prepare(CATS)
    a, b = torch.rand(2, 1, 3, 64, 96) * 2 - 1
    for images in (a, b, a, torch.rand(1, 3, 96, 64) * 2 - 1, b):
        backend.run(images, v.prompt_embeds, v.class_embeds)
    assert calls == [((4, 6), v.prompt_embeds.shape[1]), ((6, 4), v.prompt_embeds.shape[1])]
    backend.run(a, vocab.prepare(CATS + ["sky"]).prompt_embeds, v.class_embeds)  # another prompt length: new biases
    assert len(calls) == 3


def test_side_file_without_position_weights_is_one_line_error(exported, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    onnx_copy = tmp_path / "copy.onnx"
    shutil.copyfile(exported.path, onnx_copy)
    with safe_open(exported.vocab_path, "pt") as fh:
        meta = fh.metadata()
    tensors = {k: v for k, v in load_file(exported.vocab_path).items() if not k.startswith("positions.decoder.")}
    save_file(tensors, str(tmp_path / "copy.vocab.safetensors"), metadata=meta)
    with pytest.raises(IFSegError, match="lacks the position weights decoder.*re-export"):
        OnnxBackend.open(str(onnx_copy), device="cpu")


def test_static_export_folds_instead(tiny, tmp_path):
    loaded, vocab = tiny
    out = write_onnx(loaded, str(tmp_path / "s.onnx"), vocab, ExportArgs(imgsz=(48, 64), position_biases="inputs"))
    assert out.contract.bias_inputs is None
    assert [i.name for i in onnx.load(out.path).graph.input] == ["images", "prompt_embeds", "class_embeds"]


def test_engine_and_triton_refuse_bias_input_graphs(exported):
    with pytest.raises(IFSegError, match="takes its position biases as inputs.*position_biases=graph"):
        export_model(exported.path, ExportArgs(format="engine"))
    from ifseg_deploy.triton.repository import export_triton

    with pytest.raises(IFSegError, match="takes its position biases as inputs.*position_biases='graph'"):
        export_triton(exported.path, ExportArgs(out=str(exported.path) + "_triton"))
    with pytest.raises(IFSegError, match="engines compute their position biases in the graph"):
        validate(ExportArgs(format="engine", position_biases="inputs"), exported.path)


def test_info_describes_exports(exported, tiny, tmp_path, capsys):
    import json

    from ifseg_deploy.cli.main import main

    assert main(["info", exported.path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "ONNX graph"
    assert d["precision"] == "fp32"
    assert d["input"] == "dynamic batch and size"
    assert d["position_biases"].startswith("inputs")
    assert d["inputs"][3:] == [
        "encoder_bias",
        "decoder_bias",
        "cross_bias",
    ]
    assert d["categories"] == CATS
    assert d["layers"] == [TINY_ARCH.encoder_layers, TINY_ARCH.decoder_layers]
    assert d["verified"] == "yes"
    loaded, vocab = tiny
    static = write_onnx(loaded, str(tmp_path / "s.onnx"), vocab, ExportArgs(imgsz=(48, 64)))
    assert main(["info", static.path]) == 0
    text = capsys.readouterr().out
    assert "static 1x3x48x64" in text
    assert "folded into constants" in text


def test_fp16_graph_with_bias_inputs_keeps_the_bias_path_fp32(tiny, tmp_path):
    """An fp16 export of a graph that takes its biases as inputs loads and runs, and no fp32 value
    makes an fp32 -> fp16 -> fp32 round trip (the converter's casts between two fp32 nodes)."""
    import copy

    from onnx import TensorProto

    loaded, vocab = tiny
    loaded = copy.deepcopy(loaded)
    with torch.no_grad():  # a random backbone's features overflow fp16 unless its convolutions are scaled to unit gain
        for conv in loaded.model.backbone.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.mul_((conv.weight.shape[-1] / conv.weight[0].numel()) ** 0.5)
    out = write_onnx(
        loaded,
        str(tmp_path / "h.onnx"),
        vocab,
        ExportArgs(imgsz=64, image_size=(64, 80), position_biases="inputs", precision="fp16"),
    )
    model = onnx.load(out.path)
    to = {n.output[0]: n.attribute[0].i for n in model.graph.node if n.op_type == "Cast"}
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    round_trips = [
        name
        for name, t in to.items()
        if t == TensorProto.FLOAT16
        and readers.get(name)
        and all(r.op_type == "Cast" and to[r.output[0]] == TensorProto.FLOAT for r in readers[name])
    ]
    assert round_trips == []
    assert any(t == TensorProto.FLOAT16 for t in to.values())  # it is a mixed-precision graph
    backend, _ = OnnxBackend.open(out.path, device="cpu")
    v = vocab.prepare(CATS)
    images = torch.rand(1, 3, 48, 112, generator=torch.Generator().manual_seed(9)) * 2 - 1
    got, ref = backend.run(images, v.prompt_embeds, v.class_embeds).logits, _torch_logits(loaded, images, v)
    assert float((got - ref).norm() / ref.norm()) < 2e-2


def test_round_trip_casts_between_fp32_nodes_are_removed():
    """fp32 -> fp16 -> fp32 cast pairs (what the converter puts between two blocked nodes) go; a cast
    to fp16 that an fp16 node reads stays; the values are the unrounded ones."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ifseg_deploy.exporter.precision.fp16_graph import _drop_round_trips

    nodes = [
        helper.make_node("Unsqueeze", ["bias", "axes"], ["u"], name="u"),
        helper.make_node("Cast", ["u"], ["u16"], name="c16", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["u16"], ["u32"], name="c32", to=TensorProto.FLOAT),
        helper.make_node("Add", ["u32", "u32"], ["y"], name="add"),
        helper.make_node("Cast", ["bias"], ["b16"], name="keep16", to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["b16", "b16"], ["z"], name="half_mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT16, [3]),
        ],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert _drop_round_trips(model) == 1
    assert [n.name for n in model.graph.node] == ["u", "add", "keep16", "half_mul"]
    x = np.array([1.0001, 3e-5, 1234.567], np.float32)  # not representable in fp16
    y, _ = ort.InferenceSession(model.SerializeToString()).run(None, {"bias": x})
    assert np.array_equal(y[0], x + x)
