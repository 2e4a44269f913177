"""One rule set for category lists: the same one-line message from every way a list comes in."""

from __future__ import annotations

import pytest
from conftest import BPE, make_tiny_model, tiny_checkpoint

from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.categories_file import flat_classes, parse_category_spec, read_categories_file
from ifseg_deploy.text.tokenizer import OFATokenizer
from ifseg_deploy.text.vocabulary_rules import MAX_CLASSES, validate_categories
from ifseg_deploy.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary(OFATokenizer(str(BPE)), make_tiny_model(0).embed_tokens.weight)


def _message(fn) -> str:
    with pytest.raises(IFSegError) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    "names,expected",
    [
        (
            ["cat", "dog", "Cat"],
            "category 'cat' is listed twice (as 'cat', 'Cat'); list each category once (letter case is ignored)",
        ),
        (
            ["cat", "dog", "cat", "dog", "dog"],
            "category 'cat' is listed twice, category 'dog' is listed 3 times; list each category once",
        ),
        (["cat", " ", "dog", ""], "empty category name (entry 2, 4 of 4;"),
        ([], "no categories given"),
    ],
)
def test_one_message_from_every_entry_point(tmp_path, vocab, names, expected):
    f = tmp_path / "c.txt"
    f.write_text("\n".join(n for n in names if n.strip()) + "\n")
    direct = _message(lambda: validate_categories(names))
    assert expected in direct
    assert _message(lambda: vocab.prepare(names)) == direct  # segment, stream, export, Triton host
    assert _message(lambda: flat_classes(names)) == direct  # the Python training API
    if all(n.strip() for n in names) and names:  # the parsers skip blank entries of files and strings
        assert _message(lambda: parse_category_spec(", ".join(names))) == direct
        assert _message(lambda: read_categories_file(str(f))) == direct


def test_class_limit_of_label_maps():
    assert len(validate_categories([f"c{i}" for i in range(MAX_CLASSES)])) == MAX_CLASSES
    assert "more than the 65535 a label map can hold" in _message(
        lambda: validate_categories([f"c{i}" for i in range(MAX_CLASSES + 1)])
    )


def test_one_category_is_refused_for_training_only(vocab, tmp_path, capsys):
    """One class: zero loss whatever the weights, so training refuses it; inference may use it."""
    assert vocab.prepare(["cat"]).class_embeds.shape[0] == 1
    msg = _message(lambda: flat_classes(["cat"], training=True))
    assert msg.startswith("only one category ('cat') to train")
    assert "at least two" in msg
    ckpt = tiny_checkpoint(tmp_path)
    cfg = TrainConfig(checkpoint=ckpt, classes=flat_classes(["cat"]), out=str(tmp_path / "m.safetensors"))
    assert _message(lambda: Trainer(cfg)) == msg
    assert (
        main(
            [
                "train",
                "--checkpoint",
                ckpt,
                "--categories-file",
                str(_one_line(tmp_path)),
                "--out",
                str(tmp_path / "m.safetensors"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == f"error: {msg}"
    assert not list(tmp_path.glob("*.safetensors"))


def _one_line(folder):
    path = folder / "one.txt"
    path.write_text("# a single class\ncat\n")
    return path


def test_prompt_longer_than_the_model_is_refused_before_training(tmp_path):
    ckpt = tiny_checkpoint(tmp_path)
    names = [f"class{i}" for i in range(600)]  # ~2 tokens each: past the 1026 text positions
    cfg = TrainConfig(checkpoint=ckpt, classes=flat_classes(names), out=str(tmp_path / "m.safetensors"), progress=False)
    assert "more than the 1026 the model supports" in _message(lambda: Trainer(cfg))
