"""What makes a category list usable: one set of rules, one message each, for every entry point.

Every category list passes through :func:`validate_categories` (and hierarchical classes also
through :func:`check_class_words`), whether it comes from ``--categories``, a categories file, a
checkpoint's stored list, the Python API, ``export``, ``stream`` or a Triton request:
:func:`~ifseg_deploy.text.categories_file.parse_category_spec`, ``read_categories_file`` and
:meth:`~ifseg_deploy.runtime.vocabulary.Vocabulary.prepare` call them.

The rules:

* at least one category; none empty after normalisation; none listed twice (compared ignoring
  letter case, as the tokenizer's neighbours "Cat" and "cat" would be two outputs for one thing);
* at most :data:`MAX_CLASSES`: label maps are written as uint8 PNGs up to 255 classes and as
  uint16 beyond, whose largest value stays free like 255 in uint8 (the usual "ignore" label);
* every name tokenises to at least one BPE token (:func:`check_token_ids`);
* training needs at least :data:`MIN_TRAINING_CLASSES` (``training=True``): the decoder learns
  to tell the listed categories apart (IFSeg's loss is a cross-entropy over them), and over one
  class that cross-entropy is zero whatever the weights, so "training" would change nothing
  while reporting loss 0 and a perfect held-out mIoU.

Inference with one category stays allowed: the label map is then that category everywhere,
but its logits (``--save-raw``) still score every cell against the one name, and a checkpoint
trained on several classes may be asked about one of them.

The model's own limit, the prompt length (``max_text_positions`` tokens for the prefix, every
name and "unknown"), depends on the checkpoint and is checked by
:func:`ifseg_deploy.model.encoder.check_input_shape`.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

from ..errors import IFSegError
from .normalize import normalize_name

#: Fewest classes training accepts (one class makes IFSeg's cross-entropy identically zero).
MIN_TRAINING_CLASSES = 2
#: Most classes a label map holds: uint16 PNG, its largest value left free as in uint8.
MAX_CLASSES = 65535

NO_CATEGORIES = 'no categories given; pass categories="grass, cat, dog"'


def _times(n: int) -> str:
    return "twice" if n == 2 else f"{n} times"


def validate_categories(names: Iterable[str], training: bool = False) -> List[str]:
    """The normalised names (:func:`~ifseg_deploy.text.normalize.normalize_name`) of a valid list.

    Args:
        names: category names in output order (label ``i`` is ``names[i]``).
        training: also require :data:`MIN_TRAINING_CLASSES` categories.
    Returns:
        the names in normal form, same order.
    Raises:
        IFSegError: one line naming what to change: no names, an empty name (with its position),
            names listed more than once (each with its spellings), more than :data:`MAX_CLASSES`,
            or fewer than two for training.
    """
    out = [normalize_name(n) for n in names]
    if not out or all(not n for n in out):
        raise IFSegError(NO_CATEGORIES)
    empty = [str(i + 1) for i, n in enumerate(out) if not n]
    if empty:
        raise IFSegError(
            f"empty category name (entry {', '.join(empty)} of {len(out)}; two commas in a row or a trailing comma?); "
            "remove it"
        )
    spellings: Dict[str, List[str]] = {}
    for n in out:
        spellings.setdefault(n.casefold(), []).append(n)
    repeated = [s for s in spellings.values() if len(s) > 1]
    if repeated:
        parts = [
            f"category '{s[0]}' is listed {_times(len(s))}"
            + (f" (as {', '.join(repr(x) for x in s)})" if len(set(s)) > 1 else "")
            for s in repeated
        ]
        raise IFSegError(f"{', '.join(parts)}; list each category once (letter case is ignored)")
    if len(out) > MAX_CLASSES:
        raise IFSegError(f"{len(out)} categories, more than the {MAX_CLASSES} a label map can hold; use fewer")
    if training and len(out) < MIN_TRAINING_CLASSES:
        raise IFSegError(
            f"only one category ('{out[0]}') to train: training teaches the decoder to tell categories apart, "
            "and with one class the loss is zero whatever the weights; list at least two, e.g. "
            f'"{out[0]}, background"'
        )
    return out


def check_class_words(name: str, words: Sequence[str]) -> None:
    """A hierarchical class ``name: words`` lists at least one word and each word once (ignoring case).

    Raises:
        IFSegError: no words, or a word listed twice in the class (the message names both).
    """
    if not words:
        raise IFSegError(f"class '{name}' lists no words; write 'name: word, word' or just 'name'")
    seen: Dict[str, str] = {}
    for w in words:
        if w.casefold() in seen:
            raise IFSegError(f"word '{w}' appears twice in class '{name}'; list each word once")
        seen[w.casefold()] = w


def check_token_ids(names: Sequence[str], ids: Sequence[Sequence[int]]) -> None:
    """Every name tokenises to at least one BPE token (``ids[i]`` are the ids of ``names[i]``).

    Raises:
        IFSegError: naming the first name without tokens.
    """
    for name, t in zip(names, ids):
        if not t:
            raise IFSegError(f"category '{name}' tokenises to nothing; use a real word")
