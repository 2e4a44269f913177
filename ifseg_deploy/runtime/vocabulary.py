"""The text side of inference and training: categories -> prompt embeddings + class embeddings.

Computed from the frozen token-embedding table, so the category list can change at run time
without reloading weights, and the same code serves PyTorch, ONNX Runtime and TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..errors import IFSegError
from ..hub import bpe_folder
from ..text.prompt import DEFAULT_PROMPT_PREFIX, build_prompt, category_token_ids, validate_categories
from ..text.tokenizer import OFATokenizer


@dataclass
class PreparedVocabulary:
    """Everything the network needs for one category list."""

    categories: List[str]
    prompt_ids: List[int]
    prompt_embeds: Tensor  # (1, L, C)
    class_embeds: Tensor  # (N, C)


class Vocabulary:
    """Builds prompt and class embeddings from a token-embedding table ``(V, C)``.

    ``stored_categories`` / ``stored_class_embeds`` (from a fine-tuned checkpoint) are used as
    they are when the requested categories equal the stored ones; otherwise each class
    embedding is the mean token embedding of its name (IFSeg's initialisation), or, for a
    hierarchical class listed in ``class_words`` (e.g. ``{"animal": ["giraffe", "zebra"]}``),
    the mean over its words of each word's mean token embedding (paper appendix A.1).
    """

    def __init__(
        self,
        tokenizer: OFATokenizer,
        embed_table: Tensor,
        prompt_prefix: str = DEFAULT_PROMPT_PREFIX,
        stored_categories: Optional[Sequence[str]] = None,
        stored_class_embeds: Optional[Tensor] = None,
        class_words: Optional[Dict[str, Sequence[str]]] = None,
    ):
        self.tokenizer = tokenizer
        self.embed_table = embed_table.detach()
        self.prompt_prefix = prompt_prefix
        self.stored_categories = list(stored_categories) if stored_categories else None
        self.stored_class_embeds = stored_class_embeds
        self.class_words = {name: list(words) for name, words in (class_words or {}).items()}

    @classmethod
    def from_bpe(cls, bpe_dir: Optional[str], model_path: str, embed_table: Tensor, **kwargs) -> "Vocabulary":
        """A vocabulary whose tokenizer reads the BPE files in ``bpe_dir`` (default: next to
        ``model_path``, else OFA's, from the cache: :func:`ifseg_deploy.hub.bpe_folder`); ``kwargs`` as
        for the constructor. Raises :class:`IFSegError` when they are missing and cannot be fetched."""
        return cls(OFATokenizer(bpe_folder(bpe_dir, model_path)), embed_table, **kwargs)

    def _lookup(self, ids: Sequence[int]) -> Tensor:
        t = torch.as_tensor(list(ids), dtype=torch.long, device=self.embed_table.device)
        if int(t.max()) >= self.embed_table.shape[0]:
            raise IFSegError(
                "a token id is outside the model's embedding table; the BPE files do not belong to this model"
            )
        return self.embed_table[t]

    def word_embeddings(self, texts: Sequence[str]) -> Tensor:
        """Mean token embedding of each text, ``(N, C)`` (float32 math, as ``EmbeddingBag(mode="mean")``)."""
        rows = [self._lookup(ids).float().mean(0) for ids in category_token_ids(self.tokenizer, texts)]
        return torch.stack(rows).to(self.embed_table.dtype)

    def class_embeddings(self, categories: Sequence[str]) -> Tensor:
        """Class embedding of each category, ``(N, C)``: its word embedding, or the mean of its
        words' embeddings for a hierarchical class."""
        if not any(c in self.class_words for c in categories):
            return self.word_embeddings(categories)
        rows = [self.word_embeddings(self.class_words.get(c, [c])).float().mean(0) for c in categories]
        return torch.stack(rows).to(self.embed_table.dtype)

    def prepare(self, categories: Optional[Sequence[str]] = None) -> PreparedVocabulary:
        """Prompt ids/embeddings and class embeddings for ``categories`` (default: the stored ones)."""
        if categories is None:
            if self.stored_categories is None:
                raise IFSegError('this model stores no category list; pass categories="a, b, c"')
            categories = self.stored_categories
        categories = validate_categories(categories)
        prompt_ids = build_prompt(self.tokenizer, categories, self.prompt_prefix)
        if self.stored_class_embeds is not None and self.stored_categories == categories:
            class_embeds = self.stored_class_embeds.to(self.embed_table)
        else:
            class_embeds = self.class_embeddings(categories)
        return PreparedVocabulary(categories, prompt_ids, self._lookup(prompt_ids).unsqueeze(0), class_embeds)
