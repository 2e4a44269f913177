"""Random-weight models of an architecture, for timing without a trained checkpoint: in memory
with synthetic prompt / class embeddings (:func:`random_segmenter`, no BPE files), or written as
a bundle that exports like a trained model (:func:`random_bundle`)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..config import ArchConfig
from ..model import SegOFA
from ..runtime.loader import backend_class
from ..runtime.segmenter import Segmenter
from ..runtime.vocabulary import PreparedVocabulary

#: Fifteen everyday category names: the vocabulary of the random-weight benchmark models.
CATEGORIES = [
    "sky",
    "tree",
    "grass",
    "road",
    "building",
    "person",
    "car",
    "dog",
    "cat",
    "water",
    "mountain",
    "floor",
    "wall",
    "table",
    "chair",
]


class SyntheticVocabulary:
    """Random prompt / class embeddings of realistic sizes, for benchmarking shapes without weights or BPE files."""

    def __init__(self, embed_dim: int, num_classes: int, prompt_len: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        names = [f"class{i}" for i in range(num_classes)]
        self._prepared = PreparedVocabulary(
            names,
            list(range(prompt_len)),
            torch.randn(1, prompt_len, embed_dim, generator=gen),
            torch.randn(num_classes, embed_dim, generator=gen),
        )

    def prepare(self, categories: Optional[Sequence[str]] = None) -> PreparedVocabulary:
        """The same random embeddings whatever ``categories`` asks for."""
        return self._prepared


def random_model(arch: ArchConfig, seed: int = 0) -> SegOFA:
    """A randomly initialised model of ``arch`` in eval mode, the same weights for the same ``seed``."""
    torch.manual_seed(seed)
    return SegOFA(arch).eval()


def structured_model(arch: ArchConfig, seed: int = 0) -> SegOFA:
    """A random SegOFA of ``arch`` in eval mode whose logits have structure (the self-test's and the
    tests' models): matrices of unit-gain scale, norms and affines near 1 with 10% noise, batch norms
    of unit statistics and scales in [0.5, 1). The int8 graph of PyTorch's default initialisation
    (:func:`random_model`) missed the int8 gate (logits rel-RMS 0.18 against 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    model = SegOFA(arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / max(1.0, p.shape[-1]) ** 0.5)
            else:
                base = 1.0 if name.endswith("weight") or name.endswith("c_attn") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.fill_(1.0)
            elif name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("weight"):  # frozen batch norms' scales
                b.copy_(0.5 + 0.5 * torch.rand(b.shape, generator=gen))
    return model.eval()


def random_segmenter(
    arch: ArchConfig,
    num_classes: int,
    prompt_len: int,
    device: str,
    precision: Optional[str] = None,
    compile: bool = False,
    cuda_graph: bool = True,
    **kwargs,
) -> Segmenter:
    """A Segmenter over a randomly initialised model of ``arch`` (timing only); ``precision`` /
    ``compile`` / ``cuda_graph`` as for :class:`~ifseg_deploy.runtime.torch_backend.TorchBackend`."""
    backend = backend_class("torch")(
        random_model(arch), device, precision, compile, inplace=True, cuda_graph=cuda_graph
    )
    return Segmenter(backend, SyntheticVocabulary(arch.embed_dim, num_classes, prompt_len), **kwargs)


def random_bundle(arch: ArchConfig, path: str, categories: Sequence[str], bpe_dir: str, seed: int = 0) -> str:
    """Write a randomly initialised model of ``arch`` as a bundle (class embeddings of ``categories``
    from its token table), so random-weight benchmarks can export like a trained model."""
    from ..checkpoint.bundle import save_bundle
    from ..runtime.vocabulary import Vocabulary
    from ..text.tokenizer import OFATokenizer

    model = random_model(arch, seed)
    classes = Vocabulary(OFATokenizer(bpe_dir), model.embed_tokens.weight).class_embeddings(list(categories))
    save_bundle(path, model.state_dict(), classes, {"arch": arch.to_dict(), "categories": list(categories)})
    return path
