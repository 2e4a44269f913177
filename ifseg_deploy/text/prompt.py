"""Category lists and the IFSeg prompt."""

from __future__ import annotations

from typing import Iterable, List, Sequence

from ..errors import IFSegError
from .tokenizer import OFATokenizer

DEFAULT_PROMPT_PREFIX = "what is the segmentation map of the image? object:"
UNKNOWN = "unknown"
BOS, EOS = 0, 2


def parse_categories(text: str) -> List[str]:
    """``"grass, cat, concrete wall"`` -> ``["grass", "cat", "concrete wall"]`` (validated)."""
    return validate_categories(text.split(","))


def validate_categories(names: Iterable[str]) -> List[str]:
    """Strip, collapse inner whitespace and reject empty or duplicate names."""
    out = [" ".join(str(n).split()) for n in names]
    if not out or all(not n for n in out):
        raise IFSegError("no categories given; pass --categories \"grass, cat, dog\"")
    if any(not n for n in out):
        raise IFSegError("empty category name in the list (two commas in a row or a trailing comma?); remove it")
    seen = set()
    for n in out:
        if n.lower() in seen:
            raise IFSegError(f"category '{n}' is listed twice; each category must appear once")
        seen.add(n.lower())
    return out


def category_token_ids(tokenizer: OFATokenizer, categories: Sequence[str]) -> List[List[int]]:
    """Dictionary ids of each category name; a name that tokenises to nothing is an error."""
    ids = tokenizer.encode_many(categories)
    for name, t in zip(categories, ids):
        if not t:
            raise IFSegError(f"category '{name}' tokenises to nothing; use a real word")
    return ids


def build_prompt(tokenizer: OFATokenizer, categories: Sequence[str], prefix: str = DEFAULT_PROMPT_PREFIX) -> List[int]:
    """``<s> prefix c_0 ... c_{N-1} unknown </s>`` as dictionary ids (categories simply concatenated)."""
    ids = [BOS] + tokenizer.encode(prefix)
    for t in category_token_ids(tokenizer, categories):
        ids += t
    return ids + tokenizer.encode(UNKNOWN) + [EOS]
