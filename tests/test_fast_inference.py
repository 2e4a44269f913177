"""Optimised inference: batch-norm folding, fused attention, bf16 islands, shape-only biases,
--precision / --compile / --imgsz flags (numbers checked against independent computations)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_ARCH, TINY_ARCH, make_tiny_model, save_tiny_bundle

from ifseg_deploy.cli.common import precision_options
from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.model.backbone import FrozenBatchNorm2d
from ifseg_deploy.model.inference import fold_batchnorm, fold_conv_bn
from ifseg_deploy.model.positions import add_resized_offset_bias, grid_rel_index, offset_table, resize_pair_bias
from ifseg_deploy.model.transformer import Attention
from ifseg_deploy.preprocess import resized_shape
from ifseg_deploy.runtime.torch_backend import TorchBackend, cpu_has_bf16


def rel_rms(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).pow(2).mean().sqrt() / ref.double().pow(2).mean().sqrt())


def inputs(arch, h=64, w=80, classes=5, prompt=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.rand(1, 3, h, w, generator=gen) * 2 - 1,
        torch.randn(1, prompt, arch.embed_dim, generator=gen),
        torch.randn(classes, arch.embed_dim, generator=gen),
    )


def test_fold_conv_bn_equals_batch_norm_of_conv():
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = FrozenBatchNorm2d(6)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        for buf in (bn.weight, bn.bias, bn.running_mean):
            buf.copy_(torch.randn(6, generator=gen))
        bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)
    x = torch.randn(2, 4, 9, 7, generator=gen)
    y = F.conv2d(x, conv.weight, padding=1)
    expected = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5) * bn.weight[
        :, None, None
    ] + bn.bias[:, None, None]
    torch.testing.assert_close(fold_conv_bn(conv, bn)(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_backbone_matches_to_float32_rounding():
    model = make_tiny_model(1)
    x = inputs(TINY_ARCH)[0]
    with torch.inference_mode():
        ref = model.backbone(x)
        folded = fold_batchnorm(make_tiny_model(1).backbone)
        out = folded(x)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    assert rel_rms(out, ref) < 1e-6


def test_fused_attention_equals_explicit_softmax():
    gen = torch.Generator().manual_seed(2)
    attn = Attention(16, 2).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    x, mem = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
    bias = torch.randn(1, 2, 5, 7, generator=gen)
    # the attention written out: per head softmax((x Wq + bq) s (m Wk + bk)^T + bias) (m Wv + bv) * c_attn,
    # then out_proj
    q = (x @ attn.q_proj.weight.t() + attn.q_proj.bias) * (8 * 2) ** -0.5
    k = mem @ attn.k_proj.weight.t() + attn.k_proj.bias
    v = mem @ attn.v_proj.weight.t() + attn.v_proj.bias
    heads = []
    for h in range(2):
        sl = slice(8 * h, 8 * h + 8)
        probs = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) + bias[:, h], dim=-1)
        heads.append(probs @ v[..., sl] * attn.c_attn[h])
    expected = torch.cat(heads, -1) @ attn.out_proj.weight.t() + attn.out_proj.bias
    with torch.inference_mode():
        fused = attn(x, mem, bias)
    with torch.no_grad():
        exact = attn(x, mem, bias)  # autograd mode off but not inference mode: the explicit path
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "key_first, lead, size", [(True, 0, (4, 7)), (True, 0, (6, 3)), (False, 1, (4, 7)), (False, 1, (5, 5))]
)
def test_pair_bias_resize_equals_transposed_reference(key_first, lead, size):
    """The transpose-free resize against the reference's formulation: each axis resized as
    (H*Q, 1, g, g) images after explicit transposes."""
    g, heads = 4, 3
    bias = torch.randn(heads, lead + g * g, lead + g * g, generator=torch.Generator().manual_seed(3))

    def last_axis(x):
        cells = F.interpolate(x[..., lead:].reshape(-1, 1, g, g), size=size, mode="bilinear", align_corners=False)
        return torch.cat([x[..., :lead], cells.reshape(x.shape[0], x.shape[1], -1)], -1)

    if key_first:
        expected = last_axis(last_axis(bias).transpose(1, 2)).transpose(1, 2)
    else:
        expected = last_axis(last_axis(bias.transpose(1, 2)).transpose(1, 2))
    out = resize_pair_bias(bias, g, size, key_first=key_first, lead=lead)
    assert out.shape == (heads, lead + size[0] * size[1], lead + size[0] * size[1])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bucket, size", [(6, (4, 7)), (6, (7, 4)), (6, (3, 2)), (4, (9, 9)), (4, (4, 4)), (5, (4, 6))])
def test_offset_bias_equals_gather_then_resize(bucket, size):
    """The offset-kernel form of a resized relative bias against gathering the full (g^2, g^2) pair
    table and resizing both axes as images (the reference's order of work), for up- and
    down-sampling, one axis kept, and no resize at all."""
    g, heads = 4, 3
    table = torch.randn((2 * bucket - 1) ** 2 + 3, heads, generator=torch.Generator().manual_seed(5))
    pairs = table.t()[:, grid_rel_index(g, bucket)]  # (H, g*g, g*g)
    keys = F.interpolate(pairs.reshape(-1, 1, g, g), size=size, mode="bilinear", align_corners=False).reshape(
        heads, g * g, -1
    )
    planes = keys.transpose(1, 2).reshape(-1, 1, g, g)
    expected = (
        F.interpolate(planes, size=size, mode="bilinear", align_corners=False)
        .reshape(heads, keys.shape[2], -1)
        .transpose(1, 2)
    )
    hw = size[0] * size[1]
    base = torch.randn(heads, hw + 2, hw + 2)
    out = base.clone()
    add_resized_offset_bias(
        out[:, 1:-1, 1:-1], offset_table(table, bucket, g), g, size
    )  # a strided view, as in the models
    torch.testing.assert_close(out[:, 1:-1, 1:-1] - base[:, 1:-1, 1:-1], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 0], base[:, 0])
    torch.testing.assert_close(out[:, :, -1], base[:, :, -1])


@pytest.mark.parametrize("size", [(2, 2), (3, 5), (6, 4)])
def test_eager_biases_equal_graph_form(size, monkeypatch):
    """Encoder and decoder biases of the eager path (offset kernels, in-place blocks) equal the traceable
    form the ONNX graph uses (gather, two resizes, concatenated blocks)."""
    model = make_tiny_model(2).eval()
    with torch.no_grad():
        for table in list(model.encoder.image_rel_pos_table_list) + list(model.decoder.seg_rel_pos_table_list):
            table.weight.normal_()
        eager = model.encoder.position_biases(size, 6)
        eager_dec = model.decoder.position_biases(size, eager[0])
        for module in ("encoder", "decoder", "positions"):
            monkeypatch.setattr(f"ifseg_deploy.model.{module}.capturing_graph", lambda: True)
        graph = model.encoder.position_biases(size, 6)
        graph_dec = model.decoder.position_biases(size, graph[0])
    for a, b in zip(eager[1] + eager_dec[0] + [eager_dec[1]], graph[1] + graph_dec[0] + [graph_dec[1]]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_bf16_backend_close_to_fp32():
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX)")
    model = make_tiny_model(5)
    x, p, c = inputs(TINY_ARCH)
    ref = TorchBackend(model).run(x, p, c).logits
    bf16 = TorchBackend(model, precision="bf16")
    fc1 = bf16.model.encoder.layers[0].fc1.module
    assert fc1.weight.dtype == torch.bfloat16
    assert bf16.model.encoder.layers[0].final_layer_norm.weight.dtype == torch.float32
    out = bf16.run(x, p, c).logits
    assert out.dtype == torch.float32
    assert fc1.weight.dtype == torch.bfloat16  # converted once, kept
    assert rel_rms(out, ref) < 3e-2  # bf16 keeps 8 mantissa bits (2^-9 relative rounding per product)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


def test_precision_errors(monkeypatch):
    model = make_tiny_model(0)
    with pytest.raises(IFSegError, match="needs a CUDA device"):
        TorchBackend(model, precision="fp16")
    with pytest.raises(IFSegError, match=r"precision='fp8': use one of fp32, bf16, fp16 \(PyTorch\)"):
        TorchBackend(model, precision="fp8")
    with pytest.raises(
        IFSegError, match="contradicts"
    ):  # --half is the CLI's alias of --precision fp16, resolved there
        precision_options("torch", argparse.Namespace(half=True, precision="bf16", compile=False))
    monkeypatch.setattr("ifseg_deploy.runtime.torch_backend.cpu_has_bf16", lambda: False)
    with pytest.raises(IFSegError, match="AVX512-BF16 or AMX"):
        TorchBackend(model, precision="bf16")


def test_imgsz_sets_the_grid(tmp_path, bpe_dir):
    from PIL import Image

    bundle = save_tiny_bundle(tmp_path / "m.safetensors", bpe_dir=bpe_dir)
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(img)
    for imgsz in (64, 96):
        out = tmp_path / f"run{imgsz}"
        assert (
            main(
                [
                    "segment",
                    "--checkpoint",
                    bundle,
                    "--bpe-dir",
                    bpe_dir,
                    str(img),
                    "--out",
                    str(out),
                    "--imgsz",
                    str(imgsz),
                    "--save-raw",
                    "--knn-iters",
                    "1",
                ]
            )
            == 0
        )
        h, w = resized_shape(120, 200, imgsz, 4 * imgsz)
        assert np.load(out / "x_logits.npy").shape[:2] == ((h + 15) // 16, (w + 15) // 16)


def test_engine_refuses_torch_only_flags(tmp_path, bpe_dir, capsys):
    bundle = save_tiny_bundle(tmp_path / "m.safetensors", bpe_dir=bpe_dir)
    onnx = str(tmp_path / "m.onnx")
    assert main(["export", "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--out", onnx, "--imgsz", "128"]) == 0
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(img)
    for flags, message in (
        (["--precision", "bf16"], "bf16 applies to PyTorch"),
        (["--compile"], "--compile applies to PyTorch"),
    ):
        assert (
            main(["segment", "--engine", onnx, "--bpe-dir", bpe_dir, str(img), "--out", str(tmp_path / "o")] + flags)
            == 2
        )
        assert message in capsys.readouterr().err


def test_small_arch_models_run_in_bf16_end_to_end(tmp_path, bpe_dir):
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX)")
    from ifseg_deploy.runtime.segmenter import Segmenter

    bundle = save_tiny_bundle(tmp_path / "m.safetensors", bpe_dir=bpe_dir, arch=SMALL_ARCH)
    rgb = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    ref = Segmenter.load(bundle, bpe_dir=bpe_dir, device="cpu", knn_iters=0).segment(rgb)
    out = Segmenter.load(bundle, bpe_dir=bpe_dir, device="cpu", precision="bf16", knn_iters=0).segment(rgb)
    assert rel_rms(torch.from_numpy(out.logits), torch.from_numpy(ref.logits)) < 3e-2
