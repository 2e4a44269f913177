"""Tokenisation and prompt construction against the reference ids of the dev fixture."""

from __future__ import annotations

import shutil

import pytest

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.text.prompt import build_prompt, category_token_ids, parse_categories
from ifseg_deploy.text.tokenizer import OFATokenizer, find_bpe_dir

CATEGORIES = ["grass", "cat", "giraffe", "concrete wall"]


@pytest.fixture(scope="module")
def tok(bpe_dir):
    return OFATokenizer(bpe_dir)


def test_prompt_matches_reference(tok, golden):
    assert build_prompt(tok, CATEGORIES) == golden["eval0_src_tokens"][0].tolist()


def test_category_ids_match_reference(tok, golden):
    ids = category_token_ids(tok, CATEGORIES)
    assert [len(t) for t in ids] == golden["category_token_lengths"].tolist()
    assert sum(ids, []) == golden["category_token_ids"].tolist()


def test_wordwise_encoding_equals_whole_string(tok):
    # Word-wise BPE with a leading space equals encoding the sentence for ordinary text.
    assert tok.encode("what is the segmentation map") == sum(
        (tok.encode(w) for w in "what is the segmentation map".split()), []
    )
    assert tok.encode("  concrete   wall ") == tok.encode("concrete wall")


def test_parse_categories():
    assert parse_categories(" grass,cat ,  concrete   wall") == ["grass", "cat", "concrete wall"]
    for bad, msg in [("", "no categories"), (" , ", "no categories"), ("a,,b", "empty"), ("cat, dog, Cat", "twice")]:
        with pytest.raises(IFSegError, match=msg):
            parse_categories(bad)


def test_category_without_tokens(tok):
    with pytest.raises(IFSegError, match="tokenises to nothing"):
        category_token_ids(tok, ["cat", " "])


def test_missing_bpe_files(tmp_path, bpe_dir):
    with pytest.raises(IFSegError, match="bpe_dir"):
        find_bpe_dir(None, str(tmp_path / "model.pt"))
    shutil.copy(f"{bpe_dir}/encoder.json", tmp_path)
    with pytest.raises(IFSegError, match="lacks vocab.bpe, dict.txt"):
        find_bpe_dir(str(tmp_path), None)
    with pytest.raises(IFSegError, match="missing BPE file"):
        OFATokenizer(str(tmp_path))


def test_bpe_found_next_to_checkpoint(tmp_path, bpe_dir):
    sub = tmp_path / "BPE"
    sub.mkdir()
    for f in ("encoder.json", "vocab.bpe", "dict.txt"):
        shutil.copy(f"{bpe_dir}/{f}", sub)
    assert find_bpe_dir(None, str(tmp_path / "ofa_tiny.pt")) == str(sub)
