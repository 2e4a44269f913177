"""Image-free training pieces against the reference: loss, gradients, artificial batch, optimiser, freezing."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ifseg_deploy.artificial.images import ArtificialImages, ArtificialLayout, cell_embeddings, nearest_index
from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.checkpoint.fairseq_layout import reference_key
from ifseg_deploy.model import SegOFA
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.categories_file import flat_classes
from ifseg_deploy.text.tokenizer import OFATokenizer
from ifseg_deploy.train import loss as loss_mod
from ifseg_deploy.train.freeze import freeze_for_imfree
from ifseg_deploy.train.loss import imfree_loss, upsampled_cross_entropy
from ifseg_deploy.train.optim import FairseqAdam, cosine_lr

CATEGORIES = ["grass", "cat", "giraffe", "concrete wall"]


def _is_k_bias(name: str) -> bool:
    return name.endswith("k_proj.bias") or name.endswith("pos_k_linear.bias")


@pytest.fixture(scope="module")
def meta(dev_dir):
    return json.loads((dev_dir / "meta.json").read_text())


@pytest.fixture(scope="module")
def reference_step(ifseg_checkpoint, golden):
    """The fixture's image-free step: dropout / drop-path 0, train mode, the reference's freezing."""
    loaded = load_model(ifseg_checkpoint)
    model = SegOFA(dataclasses.replace(loaded.arch, dropout=0.0, drop_path=0.0))
    model.load_state_dict(loaded.model.state_dict())
    trainable = freeze_for_imfree(model)
    model.train()
    cells = torch.from_numpy(golden["train_embedding_bag_out"]).reshape(2, 1024, -1)
    targets = torch.from_numpy(golden["train_target_category_512"]).long()
    prompt = model.embed_tokens(torch.from_numpy(golden["train_aux_src_tokens"][:1])).detach()
    class_embeds = torch.from_numpy(golden["seg_embed_weight"])
    loss = imfree_loss(model, cells, targets, prompt, class_embeds)
    loss.backward()
    grads = {reference_key(n): p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss, grads, trainable, model


def test_imfree_loss_matches_reference(reference_step, golden):
    loss = reference_step[0]
    np.testing.assert_allclose(loss.item(), float(golden["train_imfree_loss"]), rtol=1e-5)


def test_gradient_norms_match_reference(reference_step, golden, meta):
    grads = reference_step[1]
    names = meta["train"]["grad_norm_names"]
    assert set(grads) == set(names)  # exactly the parameters the reference updates get a gradient
    for name, ref in zip(names, golden["train_grad_norm_values"]):
        if not _is_k_bias(name):
            np.testing.assert_allclose(grads[name].norm().item(), float(ref), rtol=1e-4, err_msg=name)


def test_full_gradients_match_reference(reference_step, golden):
    grads = reference_step[1]
    keys = [k for k in golden.files if k.startswith("train_grad__")]
    assert len(keys) == 7
    for key in keys:
        ref = torch.from_numpy(golden[key])
        torch.testing.assert_close(
            grads[key[len("train_grad__") :]], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()
        )


def test_trainable_set_is_the_reference_one(reference_step, meta):
    trainable = {reference_key(n) for n in reference_step[2]}
    model = reference_step[3]
    frozen = {reference_key(n) for n, _ in model.named_parameters()} - trainable
    no_grad = set(meta["trainable_but_no_grad_in_imfree_step"])  # decoder tables SegOFA does not have
    assert trainable == set(meta["trainable_params"]) - no_grad
    assert frozen <= set(meta["frozen_params"])
    assert "encoder.embed_tokens.weight" in frozen
    assert "encoder.image_proj.weight" in frozen


def test_artificial_batch_matches_reference(golden):
    """Feeding the reference's coarse grids through our resizing gives its cell and pixel maps."""
    images = ArtificialImages(flat_classes(CATEGORIES), torch.zeros(4, 8), grid=32)
    words = torch.zeros(2, 32, 32, dtype=torch.long)
    for i in range(2):
        grid = torch.from_numpy(golden[f"train_rand_grid{i}"])
        words[i, : grid.shape[0], : grid.shape[1]] = grid
    batch = images.render(ArtificialLayout(words, torch.from_numpy(golden["train_grid_hw"])))
    np.testing.assert_array_equal(batch.cell_classes.numpy(), golden["train_downsampled_category_32"])
    np.testing.assert_array_equal(batch.targets.numpy(), golden["train_target_category_512"])


def test_cell_embeddings_match_reference_embedding_bag(ifseg_checkpoint, bpe_dir, golden):
    table = load_model(ifseg_checkpoint).model.embed_tokens.weight
    words = Vocabulary(OFATokenizer(bpe_dir), table).class_embeddings(CATEGORIES)
    cells = torch.from_numpy(golden["train_downsampled_category_32"]).long()
    ref = torch.from_numpy(golden["train_embedding_bag_out"]).reshape(2, 1024, -1)
    torch.testing.assert_close(cell_embeddings(words, cells), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("out", [32, 512])
def test_nearest_index_equals_torch_nearest(out):
    for size in range(1, 33):
        src = torch.arange(size, dtype=torch.float32)[None, None]
        ref = F.interpolate(src, size=out, mode="nearest")[0, 0].long()
        assert torch.equal(nearest_index(out, torch.tensor([size]))[0], ref), size


@pytest.mark.parametrize("band", [1 << 24, 1 << 12])
def test_upsampled_cross_entropy_equals_dense(monkeypatch, band):
    """Banded loss and gradient equal interpolate + cross_entropy (computed densely in float64)."""
    monkeypatch.setattr(loss_mod, "BAND_ELEMENTS", band)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6 * 5, 4, generator=gen, dtype=torch.float64) * 3
    targets = torch.randint(0, 4, (3, 96, 80), generator=gen)
    ours = logits.float().requires_grad_()
    dense = logits.clone().requires_grad_()
    loss = upsampled_cross_entropy(ours, targets, (6, 5))
    loss.backward()
    up = F.interpolate(dense.transpose(1, 2).reshape(3, 4, 6, 5), size=(96, 80), mode="bilinear", align_corners=False)
    ref = F.cross_entropy(up, targets)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-6)
    torch.testing.assert_close(ours.grad.double(), dense.grad, rtol=1e-5, atol=1e-8)


def test_fairseq_adam_follows_the_reference_formula():
    """Three float64 updates against the formula of the semantics doc, computed independently in NumPy."""
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) * 1e-6 for _ in range(3)]
    lrs = [5e-5, 3e-5, 1e-5]
    p = p0.clone().requires_grad_()
    opt = FairseqAdam([p], lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    ref = p0.double().numpy().copy()
    m = np.zeros(5)
    v = np.zeros(5)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p.grad = g.clone()
        opt.param_groups[0]["lr"] = lr
        opt.step()
        gd = g.numpy()
        m = 0.9 * m + 0.1 * gd
        v = 0.999 * v + 0.001 * gd * gd
        ref = ref - lr * 0.1 * ref
        ref = ref - lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-14)
    # torch's AdamW places eps differently: visibly different on these small gradients.
    q = p0.clone().requires_grad_()
    torch_opt = torch.optim.AdamW([q], lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    for g, lr in zip(grads, lrs):
        q.grad = g.clone()
        torch_opt.param_groups[0]["lr"] = lr
        torch_opt.step()
    assert np.abs(q.detach().numpy() - ref).max() > 1e-7


def test_cosine_schedule():
    assert cosine_lr(0, 2000, 5e-5) == 5e-5
    assert cosine_lr(1000, 2000, 5e-5) == pytest.approx(2.5e-5)
    assert cosine_lr(500, 2000, 5e-5) == pytest.approx(0.5 * 5e-5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(1999, 2000, 5e-5) > 0
