"""Loading official OFA / IFSeg checkpoints and bundles: architecture inference, seg-token
initialisation, dtype/tying variants, and refusal of unsafe or broken files."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, make_tiny_model, save_fairseq_checkpoint

from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.checkpoint.bundle import read_bundle_meta, save_bundle
from ifseg_deploy.checkpoint.fairseq_layout import IFSEG_ONLY_PREFIXES, reference_key
from ifseg_deploy.checkpoint.safe_load import load_pickled_checkpoint
from ifseg_deploy.config import ArchConfig
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.tokenizer import OFATokenizer


def test_ifseg_checkpoint_arch_and_metadata(ifseg_checkpoint, golden):
    lm = load_model(ifseg_checkpoint)
    a = lm.arch
    assert (a.embed_dim, a.ffn_dim, a.encoder_layers, a.decoder_layers, a.heads) == (64, 256, 2, 2, 4)
    assert a.resnet_blocks == (3, 4, 6)
    assert a.resnet_name == "resnet50"
    assert (a.vocab_size, a.seg_grid, a.encoder_grid, a.image_bucket_size, a.token_bucket_size) == (
        59458,
        32,
        32,
        42,
        256,
    )
    assert lm.kind == "ifseg"
    assert lm.categories == ["grass", "cat", "giraffe", "concrete wall"]
    np.testing.assert_array_equal(lm.class_embeds.numpy(), golden["seg_embed_weight"])


def test_plain_ofa_checkpoint_and_seg_init(ofa_checkpoint, ifseg_checkpoint, golden, bpe_dir):
    base = load_model(ofa_checkpoint)
    assert base.kind == "ofa"
    assert base.categories is None
    assert base.class_embeds is None
    assert base.stored_dtype == "float16"
    assert base.arch.vocab_size == 59457
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
                assert 0.01 < value.std().item() < 0.03
                assert not torch.equal(value, tuned[key])
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
    extra = {
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(3)}}},
        "optimizer_history": [{"num_updates": 5}],
    }
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
    assert back.kind == "bundle"
    assert back.arch == lm.arch
    assert back.categories == lm.categories
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


# ---------------------------------------------------------------------------------------------
# Fairseq checkpoints as they exist: every layout fairseq's own loader reads, NumPy metrics,
# EMA weights, model-only files, and what is said when a setting is missing.

#: Settings as an IFSeg run stores them (values unlike the defaults, so a default cannot pass).
TASK = {
    "category_list": "sky, grass, dog",
    "prompt_prefix": "which object is this? object:",
    "patch_image_size": 512,
    "orig_patch_image_size": 384,
}
MODEL = {"attn_scale_factor": 1.5, "dropout": 0.05, "encoder_drop_path_rate": 0.2, "orig_patch_image_size": 384}


@pytest.fixture(scope="module")
def tiny_ifseg(tmp_path_factory):
    """A tiny random IFSeg model and its fairseq state dict."""
    model = make_tiny_model(4)
    classes = torch.randn(3, TINY_ARCH.embed_dim, generator=torch.Generator().manual_seed(4))
    path = save_fairseq_checkpoint(model, tmp_path_factory.mktemp("tiny_ifseg") / "base.pt", classes, ["x", "y", "z"])
    return model, classes, torch.load(path, weights_only=False)["model"]


def _numpy_extra_state():
    """extra_state / optimizer_history as fairseq writes them: metrics and 'best' as NumPy values."""
    extra = {
        "best": np.float64(0.6125),
        "train_iterator": {"epoch": np.int64(20), "iterations_in_epoch": 100, "shuffle": True},
        "metrics": {
            "valid": [
                (
                    "mIoU",
                    100,
                    "AverageMeter",
                    {"val": np.float32(0.61), "sum": np.array([1.5, 2.5]), "count": np.int32(4)},
                )
            ]
        },
        "previous_training_time": np.float64(123.5),
        "dtype": np.dtype("float16"),
    }
    history = [
        {
            "criterion_name": "SegCriterion",
            "optimizer_name": "FairseqAdam",
            "num_updates": 2000,
            "lr_scheduler_state": {"best": np.float64(0.6125)},
        }
    ]
    return extra, history


def _layout(sd, layout: str) -> dict:
    extra, history = _numpy_extra_state()
    ckpt = {"model": sd, "extra_state": extra, "optimizer_history": history, "criterion": None, "task_state": {}}
    flat = {**TASK, **MODEL}
    if layout == "cfg: task dict, model Namespace":  # IFSeg's trainer (fairseq hydra era)
        ckpt.update(
            args=None, cfg={"task": dict(TASK), "model": argparse.Namespace(**flat), "ema": {"store_ema": False}}
        )
    elif layout == "cfg: all dicts":  # OmegaConf.to_container of a dataclass-only model
        ckpt.update(args=None, cfg={"task": dict(TASK), "model": dict(MODEL), "ema": {"store_ema": False}})
    elif layout == "cfg: everything in model Namespace":  # task section without the IFSeg names
        ckpt.update(args=None, cfg={"task": {"_name": "segmentation"}, "model": argparse.Namespace(**flat)})
    elif layout == "args: Namespace":  # fairseq before the hydra config (no 'cfg' key at all)
        ckpt.update(args=argparse.Namespace(**flat))
    elif layout == "args: dict":
        ckpt.update(args=dict(flat))
    elif layout == "args win over cfg":  # fairseq's _upgrade_state_dict rebuilds cfg from a non-None args
        ckpt.update(
            args=argparse.Namespace(**flat),
            cfg={"task": {"category_list": "p, q, r", "prompt_prefix": "no"}, "model": {}},
        )
    else:
        raise AssertionError(layout)
    return ckpt


@pytest.mark.parametrize(
    "layout",
    [
        "cfg: task dict, model Namespace",
        "cfg: all dicts",
        "cfg: everything in model Namespace",
        "args: Namespace",
        "args: dict",
        "args win over cfg",
    ],
)
def test_fairseq_layouts_keep_every_stored_setting(tmp_path, tiny_ifseg, layout, caplog):
    model, classes, sd = tiny_ifseg
    path = tmp_path / "ckpt.pt"
    torch.save(_layout(sd, layout), path)
    with caplog.at_level("WARNING"):
        lm = load_model(str(path))
    assert lm.kind == "ifseg"
    assert lm.weights == "model"
    assert lm.categories == ["sky", "grass", "dog"]
    assert lm.prompt_prefix == "which object is this? object:"
    assert (lm.arch.encoder_grid, lm.arch.seg_grid, lm.arch.image_size) == (384 // 16, 32, 512)
    assert (lm.arch.attn_scale_factor, lm.arch.dropout, lm.arch.drop_path) == (1.5, 0.05, 0.2)
    assert lm.defaults == []
    assert not caplog.records
    assert torch.equal(lm.class_embeds, classes)
    for key, value in model.state_dict().items():
        assert torch.equal(lm.model.state_dict()[key], value), key


def test_numpy_values_are_read_as_data(tmp_path, tiny_ifseg):
    _, _, sd = tiny_ifseg
    path = tmp_path / "np.pt"
    torch.save(_layout(sd, "cfg: task dict, model Namespace"), path)
    got = load_pickled_checkpoint(str(path))
    assert type(got["extra_state"]["best"]) is np.float64
    assert got["extra_state"]["best"] == 0.6125
    meter = got["extra_state"]["metrics"]["valid"][0][3]
    np.testing.assert_array_equal(meter["sum"], [1.5, 2.5])
    assert meter["val"] == np.float32(0.61)
    assert meter["count"] == 4
    assert got["extra_state"]["dtype"] == np.dtype("float16")
    assert got["optimizer_history"][0]["lr_scheduler_state"]["best"] == 0.6125


def test_numpy_1_spelling_of_a_legacy_file(tmp_path):
    """Files written under NumPy 1 name its rebuild helpers numpy.core.multiarray.* (NumPy 2: numpy._core)."""
    extra, _ = _numpy_extra_state()
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.arange(3.0)}, "extra_state": extra}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    if b"numpy._core.multiarray\n" in raw:  # written under NumPy 2: rewrite as NumPy 1 did (protocol-2 GLOBAL lines)
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\nscalar\n" in raw
    assert b"numpy.core.multiarray\n_reconstruct\n" in raw
    path = tmp_path / "np1.pt"
    path.write_bytes(raw)
    got = load_pickled_checkpoint(str(path))
    assert got["extra_state"]["best"] == 0.6125
    assert torch.equal(got["model"]["w"], torch.arange(3.0))
    np.testing.assert_array_equal(got["extra_state"]["metrics"]["valid"][0][3]["sum"], [1.5, 2.5])


class _System:
    """Unpickling this would run a shell command creating a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case", ["os.system", "eval", "inside a NumPy object array", "legacy format"])
def test_code_is_refused_by_name_and_never_runs(tmp_path, case):
    marker = tmp_path / "ran"
    payload, name = _System(marker), f"{os.system.__module__}.system"
    if case == "eval":
        payload, name = _EvalPayload(str(marker)), "builtins.eval"
    if case == "inside a NumPy object array":
        payload, name = np.array([_Payload(str(marker))], dtype=object), f"{open.__module__}.open"
    path = tmp_path / "evil.pt"
    torch.save(
        {"model": {"w": torch.zeros(1)}, "extra_state": {"best": np.float64(1.0), "x": payload}},
        path,
        _use_new_zipfile_serialization=case != "legacy format",
    )
    with pytest.raises(IFSegError) as err:
        load_model(str(path))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"refusing to load {path}: it pickles {name}, ")
    assert "trust" in msg
    assert not marker.exists()


class _EvalPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w')",))


def test_ema_weights_offered_and_named(tmp_path, tiny_ifseg, caplog):
    model, classes, sd = tiny_ifseg
    ema = {k: v + 0.25 if v.is_floating_point() else v for k, v in sd.items()}
    ckpt = _layout(sd, "cfg: task dict, model Namespace")
    ckpt["cfg"]["ema"] = {"store_ema": True, "ema_fp32": False}
    ckpt["extra_state"]["ema"] = ema
    path = tmp_path / "ema.pt"
    torch.save(ckpt, path)
    with caplog.at_level("WARNING"):
        trained = load_model(str(path))
    assert trained.weights == "model"
    assert torch.equal(
        trained.model.state_dict()["decoder.layer_norm.weight"], model.state_dict()["decoder.layer_norm.weight"]
    )
    assert any(
        "also stores EMA weights" in r.getMessage() and "weights='ema'" in r.getMessage() for r in caplog.records
    )
    averaged = load_model(str(path), weights="ema")
    assert averaged.weights == "ema"
    assert averaged.categories == ["sky", "grass", "dog"]
    for key, value in model.state_dict().items():
        expected = value + 0.25 if value.is_floating_point() else value
        assert torch.equal(averaged.model.state_dict()[key], expected), key
    torch.testing.assert_close(averaged.class_embeds, classes + 0.25, rtol=0, atol=0)
    # the fp32 copy (ema_fp32=True) wins over the fp16 EMA model, as in OFA's trainer
    ckpt["extra_state"]["ema"] = {k: v.half() if v.is_floating_point() else v for k, v in ema.items()}
    ckpt["extra_state"]["ema_fp32_params"] = ema
    torch.save(ckpt, path)
    assert torch.equal(load_model(str(path), weights="ema").class_embeds, classes + 0.25)
    # no EMA stored
    plain = tmp_path / "plain.pt"
    torch.save(_layout(sd, "args: dict"), plain)
    with pytest.raises(IFSegError, match="stores no EMA weights") as err:
        load_model(str(plain), weights="ema")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("wrap", ["bare state dict", "model only"])
def test_model_only_file_says_each_default(tmp_path, tiny_ifseg, wrap, caplog):
    model, classes, sd = tiny_ifseg
    path = tmp_path / "weights.pt"
    torch.save(dict(sd) if wrap == "bare state dict" else {"model": sd}, path)
    with caplog.at_level("WARNING"):
        lm = load_model(str(path))
    assert lm.kind == "ifseg"
    assert lm.categories is None
    assert torch.equal(lm.class_embeds, classes)
    assert lm.prompt_prefix == "what is the segmentation map of the image? object:"
    assert (lm.arch.attn_scale_factor, lm.arch.encoder_grid) == (2.0, lm.arch.seg_grid)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == len(lm.defaults) == 4
    for words in (
        "attn_scale_factor; using OFA's default 2",
        "orig_patch_image_size; using its patch_image_size 512",
        "prompt_prefix; using IFSeg's 'what is the segmentation map",
        "no category list; pass `categories`",
    ):
        assert sum(words in m and m.startswith(str(path)) and "\n" not in m for m in said) == 1, words


def test_settings_kept_even_when_unusual(tmp_path, tiny_ifseg, caplog):
    _, classes, sd = tiny_ifseg
    # IFSeg's own default prompt_prefix is "" (no --prompt-prefix): it is what the model was trained with
    ckpt = _layout(sd, "cfg: all dicts")
    ckpt["cfg"]["task"]["prompt_prefix"] = ""
    ckpt["cfg"]["task"]["category_list"] = "cafe\u0301 ,  concrete\u00a0wall,dog"  # decomposed é, no-break space
    torch.save(ckpt, tmp_path / "a.pt")
    lm = load_model(str(tmp_path / "a.pt"))
    assert lm.prompt_prefix == ""
    assert lm.defaults == []
    assert lm.categories == ["caf\u00e9", "concrete wall", "dog"]
    # a category list that disagrees with the seg embedding is not used, and that is said
    ckpt["cfg"]["task"]["category_list"] = "a, b"
    torch.save(ckpt, tmp_path / "b.pt")
    with caplog.at_level("WARNING"):
        lm = load_model(str(tmp_path / "b.pt"))
    assert lm.categories is None
    assert "2 category names but 3 class embeddings" in caplog.text


def _loader_message(path) -> str:
    with pytest.raises(IFSegError) as err:
        load_model(str(path))
    return str(err.value)


#: One line: what is wrong, a short complete reason in parentheses, then what to do.
ONE_SENTENCE = re.compile(
    r"^\S+ (is truncated or damaged|is a truncated or damaged \.xz file|is not a PyTorch checkpoint) "
    r"\([^()\n]{1,100}\); (download it again|pass an ofa_\*\.pt, IFSeg checkpoint or \.safetensors bundle)$"
)


def test_truncated_real_checkpoint_every_message_one_sentence(tmp_path, ifseg_checkpoint):
    data = open(ifseg_checkpoint, "rb").read()
    cut = tmp_path / "cut.pt"
    for offset in (1, 3, 4, 64, 1000, 81_000, 5_000_000, len(data) // 2, len(data) - 22, len(data) - 1):
        cut.write_bytes(data[:offset])
        msg = _loader_message(cut)
        assert ONE_SENTENCE.match(msg), (offset, msg)
        assert "there is a high" not in msg
        assert "miniz" not in msg


def test_truncated_legacy_and_xz_files_one_sentence(tmp_path, tiny_ifseg, dev_dir):
    _, _, sd = tiny_ifseg
    buf = io.BytesIO()
    torch.save(
        _layout({k: v for k, v in list(sd.items())[:8]}, "args: Namespace"), buf, _use_new_zipfile_serialization=False
    )
    data = buf.getvalue()
    cut = tmp_path / "cut.pt"
    for offset in list(range(1, 3000, 7)) + [len(data) // 2, len(data) - 1]:
        cut.write_bytes(data[:offset])
        msg = _loader_message(cut)
        assert ONE_SENTENCE.match(msg), (offset, msg)
    xz = tmp_path / "cut.pt.xz"
    with open(dev_dir / "checkpoint.pt.xz", "rb") as fh:
        xz.write_bytes(fh.read(200_000))
    assert ONE_SENTENCE.match(_loader_message(xz)), _loader_message(xz)
