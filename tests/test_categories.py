"""Category lists as users write them: one grammar for strings and files, any editor's encoding,
line endings and Unicode forms, the paper's COCO-Stuff-27 hierarchy shipped word for word."""

from __future__ import annotations

import codecs
import json

import pytest
import torch
from conftest import SHARED, make_tiny_model, save_fairseq_checkpoint

from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.eval.classes import COCO_STUFF_27
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.categories_file import (
    ClassSpec,
    builtin_file,
    names_and_words,
    parse_categories,
    parse_category_spec,
    read_categories_file,
)
from ifseg_deploy.text.tokenizer import OFATokenizer

TABLE15 = SHARED / "data" / "coco_stuff_27_table15.json"

#: What the user means, typed plainly (composed é, single spaces).
MEANT = [
    ClassSpec("caf\u00e9", ("caf\u00e9",)),
    ClassSpec("concrete wall", ("concrete wall",)),
    ClassSpec("animal", ("giraffe", "zebra", "cat")),
    ClassSpec("grass", ("grass",)),
]

#: The same list as editors and copy-paste really produce it: decomposed é (U+0065 U+0301),
#: tabs, no-break / thin / ideographic spaces, a zero-width space, stray blanks, a comment.
MESSY = (
    "# my classes\n"
    "  cafe\u0301\t,\u00a0concrete\u2009\u2009wall  \n"
    "\n"
    "animal :\tgiraffe,zebra\u200b ,  cat   # one output\n"
    "grass\u3000\n"
)


def test_string_and_file_forms_give_the_same_classes(tmp_path):
    assert parse_category_spec("caf\u00e9, concrete wall; animal: giraffe, zebra, cat; grass") == MEANT
    f = tmp_path / "c.txt"
    f.write_text(MESSY, encoding="utf-8")
    assert read_categories_file(str(f)) == MEANT
    # one class per line, or ';' between classes, in either form
    assert parse_category_spec("caf\u00e9\nconcrete wall\nanimal: giraffe, zebra, cat\ngrass") == MEANT
    f.write_text("caf\u00e9, concrete wall; animal: giraffe, zebra, cat; grass;\n", encoding="utf-8")
    assert read_categories_file(str(f)) == MEANT
    # full-width separators of CJK input methods
    assert parse_category_spec("caf\u00e9\uff0cconcrete wall\uff1banimal\uff1agiraffe\u3001zebra, cat; grass") == MEANT


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-32", "utf-16-le"]
)
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_files_from_any_editor(tmp_path, encoding, newline):
    text = MESSY.replace("\n", newline)
    if encoding == "utf-16-le-bom":
        data = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    elif encoding == "utf-16-be-bom":
        data = codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    else:  # "utf-16" / "utf-32" write a BOM; "utf-16-le" is BOM-less UTF-16
        data = text.encode(encoding)
    f = tmp_path / "c.txt"
    f.write_bytes(data)
    assert read_categories_file(str(f)) == MEANT


def test_stored_names_match_a_later_categories_argument(tmp_path, bpe_dir):
    """A checkpoint trained on names typed one way is matched by the same words typed another way."""
    model = make_tiny_model(1)
    stored = torch.randn(2, model.cfg.embed_dim, generator=torch.Generator().manual_seed(1))
    path = save_fairseq_checkpoint(model, tmp_path / "m.pt", stored, ["cafe\u0301", "concrete\u00a0 wall"])
    lm = load_model(path)
    assert lm.categories == ["caf\u00e9", "concrete wall"]
    vocab = Vocabulary(
        OFATokenizer(bpe_dir), lm.model.embed_tokens.weight, lm.prompt_prefix, lm.categories, lm.class_embeds
    )
    typed = parse_categories(" caf\u00e9 ,concrete  wall ")
    assert torch.equal(vocab.prepare(typed).class_embeds, stored)  # stored embeddings used: the lists compare equal


@pytest.mark.parametrize(
    "text,msg",
    [
        ("animal: cat: dog", "'animal: cat: dog' has more than one ':'"),
        ("animal: cat, dog, plant: grass", "separate classes with ';'"),
        ("animal: cat, dog; : grass", "missing class name"),
        ("animal:; grass", "class 'animal' lists no words"),
        ("grass, , cat", "empty category name"),
        ("animal: cat, , dog", "empty name in the words of .animal."),
        ("animal: cat, dog; animal: cow", "category 'animal' is listed twice"),
        ("animal: cat, Cat", "'Cat' appears twice in class 'animal'"),
        (" ;\n ; ,", "no categories given"),
    ],
)
def test_ambiguous_or_broken_lists_refused_in_one_line(text, msg):
    with pytest.raises(IFSegError, match=msg) as err:
        parse_category_spec(text)
    assert "\n" not in str(err.value)


def test_plain_name_lists_refuse_word_lists():
    assert parse_categories("grass, cat") == ["grass", "cat"]
    with pytest.raises(IFSegError, match="class 'animal' lists its own words") as err:
        parse_categories("animal: cat, dog; plant: grass")
    assert "\n" not in str(err.value)


def test_names_and_words_for_the_vocabulary():
    names, words = names_and_words(MEANT)
    assert names == ["caf\u00e9", "concrete wall", "animal", "grass"]
    assert words == {"animal": ("giraffe", "zebra", "cat")}  # flat classes embed their own name


@pytest.mark.parametrize(
    "data,msg",
    [
        (
            "caf\u00e9\nna\u00efve\n".encode("cp1252"),
            r"not UTF-8 or UTF-16 text \(byte 0xE9 on line 1\); re-save it with the encoding UTF-8",
        ),
        (b"\x00\x01\x02\x03" * 100, "not a text file"),
        (b"# only a comment\r\n\r\n", "lists no categories"),
        (b"animal: cat\nanimal: dog\n", "listed twice"),
        (b"grass\nanimal: cat: dog\n", r"c\.txt:2: 'animal: cat: dog' has more than one ':'"),
    ],
)
def test_bad_files_one_line(tmp_path, data, msg):
    f = tmp_path / "c.txt"
    f.write_bytes(data)
    with pytest.raises(IFSegError, match=msg) as err:
        read_categories_file(str(f))
    assert "\n" not in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(IFSegError, match="categories file not found: .*built-in lists: coco-stuff-27"):
        read_categories_file(str(tmp_path / "nope.txt"))
    with pytest.raises(IFSegError, match="is a folder"):
        read_categories_file(str(tmp_path))
    with pytest.raises(IFSegError, match="choose one of coco-stuff-27"):
        builtin_file("coco-stuff-99")


def _table15():
    return [(c["coarse"], tuple(c["words"])) for c in json.loads(TABLE15.read_text(encoding="utf-8"))["classes"]]


def test_shipped_coco_stuff_27_file_is_table_15_word_for_word():
    table = _table15()
    assert len(table) == 27
    classes = read_categories_file("coco-stuff-27")
    assert [(c.name, c.words) for c in classes] == table
    assert read_categories_file(builtin_file("coco-stuff-27")) == classes
    # the file itself: the comment header, then exactly one 'coarse: w1, w2' line per class
    lines = [
        ln for ln in open(builtin_file("coco-stuff-27"), encoding="utf-8").read().splitlines() if not ln.startswith("#")
    ]
    assert lines == [f"{name}: {', '.join(words)}" for name, words in table]


def test_eval_coco_stuff_27_words_are_table_15():
    """Only the words come from the table; names and order stay the benchmark's (its label ids)."""
    benchmark_name = {
        "food (things)": "food-things",
        "furniture (things)": "furniture-things",
        "food (stuff)": "food-stuff",
        "furniture (stuff)": "furniture-stuff",
    }
    table = {benchmark_name.get(name, name): words for name, words in _table15()}
    assert {c.name: c.words for c in COCO_STUFF_27} == table
    assert [c.name for c in COCO_STUFF_27][:3] == [
        "electronic",
        "appliance",
        "food-things",
    ]  # benchmark order, not the table's
