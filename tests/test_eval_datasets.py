"""Built-in class lists and label mappings, folder layouts, and word-list class embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.eval.classes import ADE20K_CLASSES, COCO_STUFF_27, COCO_STUFF_CLASSES, COCO_UNSEEN_15
from ifseg_deploy.eval.datasets import DATASETS, find_samples, get_dataset
from ifseg_deploy.eval.labels import read_label_map
from ifseg_deploy.eval.metrics import IGNORE
from ifseg_deploy.eval.pairs import pair_label_maps
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.prompt import validate_categories
from ifseg_deploy.text.tokenizer import OFATokenizer


def test_class_lists():
    assert len(ADE20K_CLASSES) == 150
    assert len(COCO_STUFF_CLASSES) == 171
    assert len(COCO_STUFF_27) == 27
    assert len(COCO_UNSEEN_15) == 15
    for names in (ADE20K_CLASSES, COCO_STUFF_CLASSES, COCO_UNSEEN_15, [c.name for c in COCO_STUFF_27]):
        assert validate_categories(names) == list(names)  # usable as prompts: no duplicates, no empty names
    # mmsegmentation's order: first / last entries and the renamed stuff classes
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky")
    assert ADE20K_CLASSES[-1] == "flag"
    assert COCO_STUFF_CLASSES[0] == "person"
    assert COCO_STUFF_CLASSES[80] == "banner"
    assert COCO_STUFF_CLASSES[-1] == "wood"


def test_coarse_hierarchy():
    fine = [f for c in COCO_STUFF_27 for f in c.fine]
    assert sorted(fine) == sorted(COCO_STUFF_CLASSES)  # every fine class in exactly one coarse class
    things = {f for c in COCO_STUFF_27[:12] for f in c.fine}
    assert things == set(COCO_STUFF_CLASSES[:80])  # 12 thing super-categories, then 15 stuff ones
    # the two sources agree: a fine class named among a coarse class's words belongs to one of those classes
    for i, c in enumerate(COCO_STUFF_27):
        for f in c.fine:
            holders = [j for j, d in enumerate(COCO_STUFF_27) if f in d.words]
            assert not holders or i in holders, (f, c.name)


def test_label_mappings():
    raw = np.arange(256)
    ade = get_dataset("ade20k").mapping
    np.testing.assert_array_equal(ade.apply(raw[:151], "x"), np.r_[IGNORE, np.arange(150)])
    assert ade.apply(np.array([255]), "x")[0] == IGNORE  # mmsegmentation: 255 - 1 = 254 is set back to 255
    with pytest.raises(IFSegError, match="151"):
        ade.apply(raw[:152], "x")
    coco = get_dataset("coco-stuff").mapping
    np.testing.assert_array_equal(coco.apply(np.r_[raw[:171], 255], "x"), np.r_[np.arange(171), IGNORE])
    with pytest.raises(IFSegError, match="171"):
        coco.apply(raw[:172], "x")
    # the unseen split: the notebook's fine ids (1-based there) of the 15 classes, all else ignored
    notebook = [30, 37, 89, 52, 77, 29, 24, 20, 138, 161, 158, 113, 137, 95, 134]
    unseen = get_dataset("coco-stuff-unseen15").mapping.apply(raw[:171], "x")
    assert [int(np.flatnonzero(unseen == k)[0]) + 1 for k in range(15)] == notebook
    assert (unseen == IGNORE).sum() == 171 - 15
    coarse = get_dataset("coco-stuff-27").mapping.apply(raw[:171], "x")
    assert coarse[COCO_STUFF_CLASSES.index("person")] == [c.name for c in COCO_STUFF_27].index("person")
    assert coarse[COCO_STUFF_CLASSES.index("clouds")] == [c.name for c in COCO_STUFF_27].index("sky")
    assert sorted(set(coarse.tolist())) == list(range(27))


def test_layout_parent_folder_and_pairing(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    (base / "images/validation").mkdir(parents=True)
    (base / "annotations/validation").mkdir(parents=True)
    for k in ("b", "a"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(base / f"images/validation/{k}.jpg")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(base / f"annotations/validation/{k}.png")
    for root in (tmp_path, base):  # the wrapping folder or the dataset folder itself
        samples = find_samples(get_dataset("ade20k"), str(root))
        assert [s.key for s in samples] == ["a", "b"]
        assert samples[0].image.endswith("images/validation/a.jpg")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(base / "images/validation/a.png")
    with pytest.raises(IFSegError, match="two images named a"):
        find_samples(get_dataset("ade20k"), str(tmp_path))
    with pytest.raises(IFSegError, match="unknown dataset"):
        get_dataset("voc")
    assert DATASETS == ("ade20k", "coco-stuff", "coco-stuff-27", "coco-stuff-unseen15")


def test_pairs_and_label_files(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for name in ("x_labelTrainIds.png", "y.png"):
        Image.fromarray(np.zeros((3, 3), np.uint8)).save(gt / name)
    for name in ("x_labels.png", "x_overlay.png", "y.png"):
        Image.fromarray(np.zeros((3, 3), np.uint8)).save(pred / name)
    assert [(k, p.split("/")[-1]) for k, p, _ in pair_label_maps(str(pred), str(gt))] == [
        ("x", "x_labels.png"),
        ("y", "y.png"),
    ]
    labels = np.array([[7, 3], [0, 7]], np.uint8)
    pal = Image.frombytes("P", (2, 2), labels.tobytes())  # palette PNG (VOC-style): the indices are the labels
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, i)])
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_label_map(str(tmp_path / "pal.png")), labels)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(IFSegError, match="cannot decode"):
        read_label_map(str(tmp_path / "bad.png"))


def test_word_list_class_embeddings(bpe_dir):
    """A coarse class embedding = mean over its words of each word's mean token embedding;
    the prompt names the coarse classes; other categories are unchanged."""
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(59457, 16, generator=gen)
    tok = OFATokenizer(bpe_dir)
    base = Vocabulary(tok, table)
    words = {c.name: c.words for c in COCO_STUFF_27}
    vocab = Vocabulary(tok, table, class_words=words)
    names = ["electronic", "sky", "grass"]
    prep = vocab.prepare(names)
    for i, name in enumerate(names[:2]):
        per_word = torch.stack([table[tok.encode(w)].mean(0) for w in words[name]])
        torch.testing.assert_close(prep.class_embeds[i], per_word.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(prep.class_embeds[2], base.prepare(["grass"]).class_embeds[0], rtol=0, atol=0)
    assert prep.prompt_ids == base.prepare(names).prompt_ids
    # stored embeddings of a checkpoint trained on exactly these categories win
    stored = torch.randn(3, 16, generator=gen)
    trained = Vocabulary(tok, table, stored_categories=names, stored_class_embeds=stored, class_words=words)
    assert torch.equal(trained.prepare(names).class_embeds, stored)
