"""The IFSeg prompt (the category-list parser of :mod:`.categories_file` and the list rule of
:mod:`.vocabulary_rules` are re-exported here)."""

from __future__ import annotations

from typing import List, Sequence

from .categories_file import parse_categories
from .tokenizer import OFATokenizer
from .vocabulary_rules import check_token_ids, validate_categories

DEFAULT_PROMPT_PREFIX = "what is the segmentation map of the image? object:"
UNKNOWN = "unknown"
BOS, EOS = 0, 2

__all__ = [
    "DEFAULT_PROMPT_PREFIX",
    "UNKNOWN",
    "build_prompt",
    "category_token_ids",
    "parse_categories",
    "validate_categories",
]


def category_token_ids(tokenizer: OFATokenizer, categories: Sequence[str]) -> List[List[int]]:
    """Dictionary ids of each category name; a name that tokenises to nothing is an error."""
    ids = tokenizer.encode_many(categories)
    check_token_ids(categories, ids)
    return ids


def build_prompt(tokenizer: OFATokenizer, categories: Sequence[str], prefix: str = DEFAULT_PROMPT_PREFIX) -> List[int]:
    """``<s> prefix c_0 ... c_{N-1} unknown </s>`` as dictionary ids (categories simply concatenated)."""
    ids = [BOS] + tokenizer.encode(prefix)
    for t in category_token_ids(tokenizer, categories):
        ids += t
    return ids + tokenizer.encode(UNKNOWN) + [EOS]
