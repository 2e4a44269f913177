"""Image-free training end to end on a tiny model: it learns, resumes exactly, and stores what it should."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import BPE, TRAIN_ARCH, tiny_checkpoint
from safetensors.torch import load_file

from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.train import (
    ArtificialImages,
    ClassSpec,
    TrainConfig,
    Trainer,
    flat_classes,
    holdout_metrics,
    read_categories_file,
    state_path,
)

CLASSES = ["grass", "cat", "sky"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_train"))


def _cfg(ckpt: str, out: Path, **kw) -> TrainConfig:
    base = dict(
        classes=flat_classes(CLASSES), steps=10, batch_size=4, max_cells=4, holdout_size=4, progress=False, lr=3e-3
    )
    base.update(kw)
    return TrainConfig(checkpoint=ckpt, out=str(out), **base)


def _weights(path: str) -> dict:
    return load_file(path)


def test_tiny_model_learns(ckpt, tmp_path):
    out = tmp_path / "tiny.safetensors"
    trainer = Trainer(_cfg(ckpt, out, steps=200, batch_size=8, holdout_size=16, lr=1e-2))
    before = holdout_metrics(trainer.model, trainer.images, trainer.prompt_embeds, trainer.class_embeds, 16)
    losses = []
    result = trainer.run(on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 200
    assert before["pixel_acc"] < 0.7
    assert result.holdout["pixel_acc"] >= 0.95, result.holdout
    assert result.holdout["miou"] >= 0.9, result.holdout
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    loaded = load_model(str(out))
    assert loaded.categories == CLASSES
    assert loaded.metadata["holdout"] == result.holdout
    assert loaded.metadata["training"]["steps"] == 200
    assert loaded.metadata["training"]["lr"] == 1e-2
    torch.testing.assert_close(loaded.class_embeds, trainer.class_embeds)
    assert not os.path.exists(state_path(str(out)))
    # The written bundle reproduces the held-out figure.
    again = holdout_metrics(loaded.model, trainer.images, trainer.prompt_embeds, loaded.class_embeds, 16)
    assert again == result.holdout


def test_kill_and_resume_gives_identical_weights(ckpt, tmp_path):
    """Crash after update 5 (state saved at 3), resume: bit-identical to an uninterrupted run (dropout on)."""
    kw = dict(steps=10, save_every=3, grad_accum=2, dropout=0.1, drop_path=0.1)
    full = tmp_path / "full.safetensors"
    Trainer(_cfg(ckpt, full, **kw)).run()

    out = tmp_path / "resumed.safetensors"

    def crash(step: int, loss: float) -> None:
        if step == 5:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_cfg(ckpt, out, **kw)).run(on_step=crash)
    assert not out.exists()
    saved = torch.load(state_path(str(out)), weights_only=True)
    assert saved["step"] == 3

    with pytest.raises(IFSegError, match="resume=True"):
        Trainer(_cfg(ckpt, out, **kw))
    with pytest.raises(IFSegError, match="different settings.*seed"):
        Trainer(_cfg(ckpt, out, seed=1, resume=True, **kw)).run()

    result = Trainer(_cfg(ckpt, out, resume=True, **kw)).run()
    a, b = _weights(str(full)), _weights(str(out))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert result.holdout == load_model(str(full)).metadata["holdout"]
    assert not os.path.exists(state_path(str(out)))


def test_corrupt_state_is_refused(ckpt, tmp_path):
    out = tmp_path / "m.safetensors"
    Path(state_path(str(out))).write_bytes(b"not a torch file")
    with pytest.raises(IFSegError, match="cannot read training state"):
        Trainer(_cfg(ckpt, out, resume=True)).run()


def test_grad_accumulation_matches_full_batch(ckpt, tmp_path):
    """Same global batch split into micro-batches: same update (up to float summation order)."""
    kw = dict(steps=3, dropout=0.0, drop_path=0.0)
    one = Trainer(_cfg(ckpt, tmp_path / "a.safetensors", grad_accum=1, **kw))
    two = Trainer(_cfg(ckpt, tmp_path / "b.safetensors", grad_accum=4, **kw))
    one.run()
    two.run()
    for (name, p), q in zip(one.model.named_parameters(), two.model.parameters()):
        if not name.endswith(("k_proj.bias", "pos_k_linear.bias")):  # zero gradient: Adam amplifies rounding noise
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    moved = [n for n, p in one.model.named_parameters() if n in one.trainable]
    assert moved  # and training did change the trainable weights:
    start = load_model(ckpt).model.state_dict()
    assert any(not torch.equal(start[n], dict(one.model.named_parameters())[n].detach()) for n in moved)


def test_bf16_autocast_keeps_float32_weights_and_loss(ckpt, tmp_path):
    """Mixed precision (bf16 autocast, available on CPU too): same loss as float32 up to bf16 rounding."""
    kw = dict(steps=2, dropout=0.0, drop_path=0.0)
    full = Trainer(_cfg(ckpt, tmp_path / "a.safetensors", **kw))
    mixed = Trainer(_cfg(ckpt, tmp_path / "b.safetensors", precision="bf16", **kw))
    assert (full.precision, mixed.precision) == ("fp32", "bf16")
    assert mixed.train_step() == pytest.approx(full.train_step(), rel=0.03)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in mixed.params)


def test_frozen_weights_unchanged(ckpt, tmp_path):
    out = tmp_path / "m.safetensors"
    Trainer(_cfg(ckpt, out, steps=2)).run()
    start = load_model(ckpt).model.state_dict()
    trained = _weights(str(out))
    for k in start:
        if k.startswith(("backbone.", "encoder.image_proj.", "embed_tokens.")):
            assert torch.equal(start[k], trained[k]), k


def test_hierarchical_classes(ckpt, tmp_path):
    spec = tmp_path / "classes.txt"
    spec.write_text("# outdoor scene\nanimal: cat, zebra, giraffe  # one output\nconcrete wall\n\ngrass, sky\n")
    classes = read_categories_file(str(spec))
    assert classes == [
        ClassSpec("animal", ("cat", "zebra", "giraffe")),
        ClassSpec("concrete wall", ("concrete wall",)),
        ClassSpec("grass", ("grass",)),
        ClassSpec("sky", ("sky",)),
    ]
    out = tmp_path / "h.safetensors"
    trainer = Trainer(_cfg(ckpt, out, classes=classes, steps=1, holdout_size=2))
    # Class embedding = mean of its words' embeddings (each the mean of its tokens).
    from ifseg_deploy.runtime.vocabulary import Vocabulary
    from ifseg_deploy.text.tokenizer import OFATokenizer

    vocab = Vocabulary(OFATokenizer(str(BPE)), trainer.model.embed_tokens.weight)
    words = vocab.class_embeddings(["cat", "zebra", "giraffe", "concrete wall"])
    torch.testing.assert_close(trainer.class_embeds[0], words[:3].mean(0))
    torch.testing.assert_close(trainer.class_embeds[1], words[3])
    # Cells draw every word of a class; targets carry the class.
    layout = trainer.images.sample_layout(64, seed=3)
    batch = trainer.images.render(layout)
    assert set(layout.words.unique().tolist()) == set(range(6))
    assert torch.equal(trainer.images.word_class[layout.words].max(), torch.tensor(3))
    assert batch.cell_embeds.shape == (64, 64, TRAIN_ARCH.embed_dim)
    trainer.run()
    meta = load_model(str(out)).metadata
    assert meta["categories"] == ["animal", "concrete wall", "grass", "sky"]
    assert meta["training"]["hierarchy"] == {"animal": ["cat", "zebra", "giraffe"]}


def test_generator_is_seeded_and_covers_the_recipe():
    classes = flat_classes(["a", "b", "c", "d", "e"])
    images = ArtificialImages(classes, torch.randn(5, 4), grid=32, max_cells=32)
    a, b, c = images.sample_layout(256, 7), images.sample_layout(256, 7), images.sample_layout(256, 8)
    assert torch.equal(a.words, b.words)
    assert torch.equal(a.sizes, b.sizes)
    assert not torch.equal(a.words, c.words)
    assert a.sizes.min() == 1
    assert a.sizes.max() == 32
    assert set(a.words.unique().tolist()) == set(range(5))  # never "unknown" (no index 5)
    full = images.render(a)
    part = images.render(images.sample_layout(256, 7)[100:104])
    assert torch.equal(part.targets, full.targets[100:104])
    assert torch.equal(part.cell_embeds, full.cell_embeds[100:104])
    assert full.targets.shape == (256, 512, 512)
    # A sample's target holds exactly the classes of its sh x sw coarse grid.
    sh, sw = a.sizes[0].tolist()
    assert set(full.targets[0].unique().tolist()) == set(a.words[0, :sh, :sw].unique().tolist())


@pytest.mark.parametrize(
    "text,msg",
    [
        ("animal:\n", "lists no words"),
        ("animal: cat, dog, Cat\n", "'Cat' appears twice in class 'animal'"),
        ("cat\nCat\n", "listed twice"),
        ("# nothing\n\n", "lists no categories"),
        ("animal: cat,, dog\n", "empty name"),
        (": cat\n", "missing class name"),
    ],
)
def test_categories_file_errors(tmp_path, text, msg):
    f = tmp_path / "c.txt"
    f.write_text(text)
    with pytest.raises(IFSegError, match=msg):
        read_categories_file(str(f))
