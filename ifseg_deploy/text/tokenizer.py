"""GPT-2 byte-level BPE (HF ``tokenizers``) mapped through OFA's fairseq ``dict.txt``."""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import numpy as np

from ..errors import IFSegError

BPE_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
#: fairseq's special symbols come before the dict.txt entries.
NUM_SPECIALS = 4
UNK = 3


def find_bpe_dir(bpe_dir: Optional[str], checkpoint: Optional[str]) -> str:
    """The folder holding ``encoder.json``, ``vocab.bpe`` and ``dict.txt``.

    ``bpe_dir`` wins; otherwise the checkpoint's folder and its ``bpe/`` / ``BPE/`` subfolder.
    """
    candidates = [bpe_dir] if bpe_dir else []
    if checkpoint:
        base = os.path.dirname(os.path.abspath(checkpoint))
        candidates += [base, os.path.join(base, "bpe"), os.path.join(base, "BPE"), os.path.join(base, "utils", "BPE")]
    for d in candidates:
        if all(os.path.isfile(os.path.join(d, f)) for f in BPE_FILES):
            return d
    if bpe_dir:
        missing = [f for f in BPE_FILES if not os.path.isfile(os.path.join(bpe_dir, f))]
        raise IFSegError(f"bpe_dir={bpe_dir} lacks {', '.join(missing)}; point it at OFA's utils/BPE folder")
    raise IFSegError(
        "GPT-2 BPE files (encoder.json, vocab.bpe, dict.txt) not found next to the checkpoint; "
        "pass `bpe_dir` pointing at OFA's utils/BPE folder"
    )


class OFATokenizer:
    """Text -> OFA dictionary ids, as the reference encodes prompts and category names.

    Each whitespace-separated word is BPE-encoded with a leading space, then every GPT-2 id is
    looked up in ``dict.txt`` (line ``i`` is dictionary index ``i + 4``; unknown ids map to ``<unk>``).
    """

    def __init__(self, bpe_dir: str):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        enc, merges, dict_txt = (os.path.join(bpe_dir, f) for f in BPE_FILES)
        for f in (enc, merges, dict_txt):
            if not os.path.isfile(f):
                raise IFSegError(f"missing BPE file {f}; point `bpe_dir` at OFA's utils/BPE folder")
        try:
            tok = Tokenizer(models.BPE.from_file(enc, merges))
            with open(enc, encoding="utf-8") as fh:
                n_bpe = len(json.load(fh))
            table = np.full(n_bpe, UNK, dtype=np.int64)
            with open(dict_txt, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    sym = line.split(" ", 1)[0]
                    if sym.isdigit() and int(sym) < n_bpe:
                        table[int(sym)] = i + NUM_SPECIALS
        except IFSegError:
            raise
        except Exception as e:  # tokenizers raises plain Exceptions on malformed files
            raise IFSegError(
                f"cannot read the BPE files in {bpe_dir} ({str(e).splitlines()[0][:120]}); re-copy OFA's utils/BPE"
            ) from None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        self._table = table
        self.bpe_dir = bpe_dir

    def encode(self, text: str) -> List[int]:
        """Dictionary ids of ``text`` (no BOS/EOS)."""
        words = text.split()
        if not words:
            return []
        encs = self._tok.encode_batch([" " + w for w in words])
        return [int(self._table[i]) for e in encs for i in e.ids]

    def encode_many(self, texts: Sequence[str]) -> List[List[int]]:
        return [self.encode(t) for t in texts]
