"""Loading official OFA / IFSeg checkpoints and bundles: architecture inference, seg-token
initialisation, dtype/tying variants, and refusal of unsafe or broken files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from conftest import TINY_ARCH, make_tiny_model, save_fairseq_checkpoint
from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.checkpoint.bundle import read_bundle_meta, save_bundle
from ifseg_deploy.checkpoint.fairseq_layout import IFSEG_ONLY_PREFIXES, reference_key
from ifseg_deploy.config import ArchConfig
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.tokenizer import OFATokenizer


def test_ifseg_checkpoint_arch_and_metadata(ifseg_checkpoint, golden):
    lm = load_model(ifseg_checkpoint)
    a = lm.arch
    assert (a.embed_dim, a.ffn_dim, a.encoder_layers, a.decoder_layers, a.heads) == (64, 256, 2, 2, 4)
    assert a.resnet_blocks == (3, 4, 6) and a.resnet_name == "resnet50"
    assert (a.vocab_size, a.seg_grid, a.encoder_grid, a.image_bucket_size, a.token_bucket_size) == (59458, 32, 32, 42, 256)
    assert lm.kind == "ifseg"
    assert lm.categories == ["grass", "cat", "giraffe", "concrete wall"]
    np.testing.assert_array_equal(lm.class_embeds.numpy(), golden["seg_embed_weight"])


def test_plain_ofa_checkpoint_and_seg_init(ofa_checkpoint, ifseg_checkpoint, golden, bpe_dir):
    base = load_model(ofa_checkpoint)
    assert base.kind == "ofa" and base.categories is None and base.class_embeds is None
    assert base.stored_dtype == "float16" and base.arch.vocab_size == 59457
    # Seg-token initialisation = mean word embedding of each category (reference value).
    vocab = Vocabulary(OFATokenizer(bpe_dir), base.model.embed_tokens.weight)
    init = vocab.class_embeddings(["grass", "cat", "giraffe", "concrete wall"])
    np.testing.assert_array_equal(init.numpy(), golden["category_embeddings_fp32"])
    # Every tensor OFA has equals the fine-tuned checkpoint's; IFSeg-only ones are fresh.
    tuned = load_model(ifseg_checkpoint).model.state_dict()
    for key, value in base.model.state_dict().items():
        if reference_key(key).startswith(IFSEG_ONLY_PREFIXES):
            if key.startswith("decoder.seg_pos_ln."):
                assert torch.all(value == (1.0 if key.endswith("weight") else 0.0))
            else:
                assert 0.01 < value.std().item() < 0.03 and not torch.equal(value, tuned[key])
        elif key == "embed_tokens.weight":
            assert torch.equal(value, tuned[key][:59457])
        else:
            assert torch.equal(value, tuned[key]), key


@pytest.mark.parametrize(
    "arch",
    [
        ArchConfig(embed_dim=48, ffn_dim=96, encoder_layers=3, decoder_layers=1, heads=3, resnet_blocks=(3, 4, 23)),
        ArchConfig(embed_dim=32, ffn_dim=128, encoder_layers=1, decoder_layers=2, heads=8, resnet_blocks=(3, 8, 36)),
    ],
)
def test_architecture_inferred_from_tensors(tmp_path, arch):
    model = make_tiny_model(1, arch)
    classes = torch.randn(3, arch.embed_dim)
    path = save_fairseq_checkpoint(model, tmp_path / "ckpt.pt", classes, ["a", "b", "c"])
    lm = load_model(path)
    assert lm.arch == arch
    for key, value in model.state_dict().items():
        assert torch.equal(lm.model.state_dict()[key], value), key


def test_fp16_shared_storage_and_optimizer_state(tmp_path, bpe_dir):
    model = make_tiny_model(2)
    classes = torch.randn(2, TINY_ARCH.embed_dim)
    extra = {"last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(3)}}}, "optimizer_history": [{"num_updates": 5}]}
    path = save_fairseq_checkpoint(model, tmp_path / "half.pt", classes.half(), ["x", "y"], fp16=True, extra=extra)
    lm = load_model(path)
    assert lm.stored_dtype == "float16"
    ref = model.state_dict()
    for key, value in lm.model.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ref[key].half().float(), atol=0, rtol=0)


def test_state_dict_only_file(tmp_path):
    model = make_tiny_model(3)
    path = save_fairseq_checkpoint(model, tmp_path / "full.pt")
    sd = torch.load(path, weights_only=False)["model"]
    torch.save(sd, tmp_path / "sd.pt")
    assert load_model(str(tmp_path / "sd.pt")).kind == "ofa"


def test_bundle_round_trip(tmp_path, ifseg_checkpoint, golden):
    lm = load_model(ifseg_checkpoint)
    path = str(tmp_path / "m.safetensors")
    meta = {"arch": lm.arch.to_dict(), "categories": lm.categories, "prompt_prefix": lm.prompt_prefix}
    save_bundle(path, lm.model.state_dict(), lm.class_embeds, meta)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not the owner-only mode of the temp file
    assert read_bundle_meta(path)["categories"] == lm.categories
    back = load_model(path)
    assert back.kind == "bundle" and back.arch == lm.arch and back.categories == lm.categories
    img = torch.from_numpy(golden["eval0_patch_images"])
    ids = torch.from_numpy(golden["eval0_src_tokens"])
    with torch.no_grad():
        a, _ = lm.model(img, lm.model.embed_tokens(ids), lm.class_embeds)
        b, _ = back.model(img, back.model.embed_tokens(ids), back.class_embeds)
    assert torch.equal(a, b)


class _Payload:
    """Unpickling this would create a marker file (code execution)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": _Payload(str(marker))}, path)
    with pytest.raises(IFSegError, match="refusing to load") as err:
        load_model(str(path))
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # The same through a raw (non-zip) pickle stream.
    raw = tmp_path / "evil_raw.pt"
    with open(raw, "wb") as fh:
        pickle.dump({"model": _Payload(str(marker))}, fh, protocol=2)
    with pytest.raises(IFSegError):
        load_model(str(raw))
    assert not marker.exists()


def test_broken_files(tmp_path, ifseg_checkpoint):
    trunc = tmp_path / "trunc.pt"
    with open(ifseg_checkpoint, "rb") as src:
        trunc.write_bytes(src.read(5_000_000))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    not_ofa = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, not_ofa)
    listy = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listy)
    for path, pattern in [
        (trunc, "truncated|not a"),
        (junk, "truncated|not a"),
        (empty, "empty"),
        (not_ofa, "not an OFA"),
        (listy, "dictionary"),
        (tmp_path / "missing.pt", "not found"),
    ]:
        with pytest.raises(IFSegError, match=pattern) as err:
            load_model(str(path))
        assert "\n" not in str(err.value)


def test_bundle_errors(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(IFSegError, match="not an ifseg-deploy bundle"):
        load_model(str(plain))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(IFSegError):
        load_model(str(bad))
