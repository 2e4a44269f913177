"""The PyTorch model against the reference goldens of the dev fixture (every intermediate)."""

from __future__ import annotations

import pytest
import torch

from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.checkpoint.safe_load import load_pickled_checkpoint
from ifseg_deploy.model.decoder import seg_rel_index
from ifseg_deploy.model.positions import grid_rel_index, token_rel_index

ATOL, RTOL = 2e-4, 1e-4


@pytest.fixture(scope="module")
def loaded(ifseg_checkpoint):
    return load_model(ifseg_checkpoint)


@pytest.fixture(scope="module")
def trace(loaded, golden):
    """Run the model stage by stage on the golden input, recording intermediates."""
    m = loaded.model
    out = {}
    img = torch.from_numpy(golden["eval0_patch_images"])
    ids = torch.from_numpy(golden["eval0_src_tokens"][0])
    with torch.no_grad():
        feats = m.backbone(img)
        size = tuple(feats.shape[2:])
        feats = feats.flatten(2).transpose(1, 2)
        out["image_embed_before_proj"] = feats
        proj = m.encoder.image_proj(feats)
        out["image_embed_before_scale"] = proj
        prompt = m.embed_tokens(ids)[None]
        enc = m.encoder
        x = torch.cat(
            [
                enc.patch_layernorm_embedding(proj + enc.type_embedding.weight[1]),
                enc.layernorm_embedding(prompt + enc.type_embedding.weight[0]),
            ],
            1,
        )
        pos = enc.position_embeddings(size, ids.numel())
        out["position_embeddings"] = pos[None]
        for i, (layer, bias) in enumerate(zip(enc.layers, enc.layer_biases(size, ids.numel(), pos))):
            x = layer(x, bias)
            out[f"encoder_layer{i}_out"] = x
        encoded = enc.layer_norm(x)
        out["encoder_out"] = encoded
        logits, _ = m(img, prompt, loaded.class_embeds)
        out["seg_logits"] = logits
    out["size"] = size
    return out


def _tbc(a):
    return torch.from_numpy(a).transpose(0, 1)


@pytest.mark.parametrize(
    "name,ref_key,tbc",
    [
        ("image_embed_before_proj", "eval0_image_embed_before_proj", False),
        ("image_embed_before_scale", "eval0_image_embed_before_scale", False),
        ("position_embeddings", "eval0_position_embeddings", False),
        ("encoder_layer0_out", "eval0_encoder_layer0_out_TBC", True),
        ("encoder_layer1_out", "eval0_encoder_layer1_out_TBC", True),
        ("encoder_out", "eval0_encoder_out_TBC", True),
    ],
)
def test_encoder_intermediates(trace, golden, name, ref_key, tbc):
    ref = _tbc(golden[ref_key]) if tbc else torch.from_numpy(golden[ref_key])
    torch.testing.assert_close(trace[name], ref, atol=ATOL, rtol=RTOL)


def test_grid_shape(trace, golden):
    assert list(trace["size"]) == golden["eval0_image_embed_shape"].tolist()


def test_logits_match_reference(trace, golden):
    ref = torch.from_numpy(golden["eval0_seg_logits"][:, :-1])  # reference's dummy last row dropped
    torch.testing.assert_close(trace["seg_logits"], ref, atol=ATOL, rtol=RTOL)
    exact = torch.from_numpy(golden["eval0_seg_logits_fp64"][:, :-1]).float()
    assert (trace["seg_logits"] - exact).abs().max() < 1e-4
    assert (trace["seg_logits"].argmax(-1).reshape(32, 32).numpy() == golden["eval0_lowres_label_map"]).all()


def test_decoder_intermediates(loaded, trace, golden):
    """Decoder input and per-layer outputs, recomputed from the reference encoder output."""
    m = loaded.model
    dec = m.decoder
    encoded = _tbc(golden["eval0_encoder_out_TBC"])
    pos = torch.from_numpy(golden["eval0_position_embeddings"][0])
    size = (32, 32)
    with torch.no_grad():
        x = torch.cat([m.embed_tokens.weight[0].expand(1, 1, -1), encoded[:, :1024]], 1)
        x = dec.layernorm_embedding(x)
        torch.testing.assert_close(
            x, torch.from_numpy(golden["eval0_decoder_input_after_layernorm_embedding"]), atol=ATOL, rtol=RTOL
        )
        queries = dec.seg_pos_ln(dec.target_positions(size))
        from ifseg_deploy.model.encoder import abs_position_bias

        cross = abs_position_bias(
            dec.cross_pos_q_linear, dec.cross_pos_k_linear, queries, pos, dec.cfg.heads, dec.pos_scaling
        )[None]
        for i, (layer, bias) in enumerate(zip(dec.layers, dec.self_biases(size, queries))):
            x = layer(x, bias, encoded, cross)
            torch.testing.assert_close(x, _tbc(golden[f"eval0_decoder_layer{i}_out_TBC"]), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(
            dec.layer_norm(x), torch.from_numpy(golden["eval0_decoder_features"]), atol=ATOL, rtol=RTOL
        )


def test_bucket_indices_equal_checkpoint_buffers(ifseg_checkpoint):
    """Index matrices computed from the formulas equal the reference's stored buffers."""
    sd = load_pickled_checkpoint(ifseg_checkpoint)["model"]
    assert torch.equal(token_rel_index(1024, 256), sd["encoder.token_rp_bucket"])
    assert torch.equal(grid_rel_index(42, 42), sd["encoder.image_rp_bucket"][1:, 1:])
    assert torch.equal(seg_rel_index(32), sd["decoder.seg_rp_bucket"])


def test_batch_of_two_equals_single(loaded, golden):
    m = loaded.model
    img = torch.from_numpy(golden["eval0_patch_images"])
    prompt = m.embed_tokens(torch.from_numpy(golden["eval0_src_tokens"]))
    batch = torch.cat([img, img.flip(-1)])
    with torch.no_grad():
        both, _ = m(batch, prompt, loaded.class_embeds)
        second, _ = m(batch[1:], prompt, loaded.class_embeds)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[:1], torch.from_numpy(golden["eval0_seg_logits"][:, :-1]), atol=ATOL, rtol=RTOL)
