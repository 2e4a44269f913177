"""Shared test fixtures: the dev conformance fixture (each file decompressed once per session, when
first used), BPE files, and tiny random models built in the test itself."""

from __future__ import annotations

import dataclasses
import lzma
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from ifseg_deploy.bench.synthetic import structured_model
from ifseg_deploy.config import ArchConfig
from ifseg_deploy.model import SegOFA

SHARED = Path(os.environ.get("IFSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEV = SHARED / "fixtures" / "dev"
BPE = SHARED / "bpe"

TINY_ARCH = ArchConfig(
    embed_dim=32, ffn_dim=64, encoder_layers=1, decoder_layers=1, heads=2, resnet_blocks=(1, 1, 1), vocab_size=59457
)


def pytest_configure(config: pytest.Config) -> None:
    """No test reaches the network or the user's model cache: an empty cache of the session's own,
    offline (the download tests turn the network back on for their local server)."""
    import tempfile

    os.environ["IFSEG_CACHE"] = tempfile.mkdtemp(prefix="ifseg-test-cache-")
    os.environ["IFSEG_OFFLINE"] = "1"
    os.environ.pop("IFSEG_MIRROR", None)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (set IFSEG_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def bpe_dir() -> str:
    return str(_require(BPE))


@pytest.fixture(scope="session")
def golden():
    return np.load(_require(DEV / "golden.npz"))


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    return _require(DEV)


class DecompressedFixture(Mapping):
    """``checkpoint.pt`` / ``base_checkpoint.pt`` -> the path of its decompressed copy, each ``.xz``
    decompressed when a test first asks for it (a CUDA machine may hold ``checkpoint.pt.xz`` alone)."""

    NAMES = ("checkpoint.pt", "base_checkpoint.pt")

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: dict = {}
        # The BPE files sit next to the checkpoints, as OFA ships them.
        for f in ("encoder.json", "vocab.bpe", "dict.txt"):
            os.symlink(BPE / f, folder / f)

    def __getitem__(self, name: str) -> str:
        if name not in self.NAMES:
            raise KeyError(name)
        if name not in self.paths:
            dst = self.folder / name
            with lzma.open(_require(DEV / (name + ".xz"))) as src, open(dst, "wb") as fh:
                shutil.copyfileobj(src, fh)
            self.paths[name] = str(dst)
        return self.paths[name]

    def __iter__(self):
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)


@pytest.fixture(scope="session")
def fixture_checkpoints(tmp_path_factory) -> DecompressedFixture:
    """Decompressed ``checkpoint.pt`` and ``base_checkpoint.pt``: each once per session, on first use."""
    return DecompressedFixture(tmp_path_factory.mktemp("dev_fixture"))


@pytest.fixture(scope="session")
def ifseg_checkpoint(fixture_checkpoints) -> str:
    return fixture_checkpoints["checkpoint.pt"]


@pytest.fixture(scope="session")
def ofa_checkpoint(fixture_checkpoints) -> str:
    return fixture_checkpoints["base_checkpoint.pt"]


def make_tiny_model(seed: int = 0, arch: ArchConfig = TINY_ARCH) -> SegOFA:
    """A small random SegOFA whose outputs are not degenerate (the self-test's initialisation)."""
    return structured_model(arch, seed)


def save_fairseq_checkpoint(
    model: SegOFA, path, class_embeds=None, categories=None, fp16: bool = False, extra=None
) -> str:
    """Write ``model`` in the fairseq layout of an OFA (no class_embeds) or IFSeg checkpoint."""
    import argparse

    from ifseg_deploy.checkpoint.fairseq_layout import IFSEG_ONLY_PREFIXES, reference_key

    sd = {}
    for key, value in model.state_dict().items():
        ref = reference_key(key)
        if class_embeds is None and ref.startswith(IFSEG_ONLY_PREFIXES):
            continue
        sd[ref] = value.half() if fp16 and value.is_floating_point() else value.clone()
    sd["decoder.embed_tokens.weight"] = sd["encoder.embed_tokens.weight"]
    if class_embeds is not None:
        sd["decoder.seg_projection.weight"] = class_embeds.clone()
    task = {"category_list": ", ".join(categories)} if categories else {}
    ckpt = {"args": None, "cfg": {"model": argparse.Namespace(arch="test"), "task": task}, "model": sd}
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return str(path)


#: TINY_ARCH at a 128-pixel working resolution (8x8 seg grid): fast end-to-end CLI tests.
SMALL_ARCH = dataclasses.replace(TINY_ARCH, seg_grid=8, encoder_grid=8)


def save_tiny_bundle(
    path, categories=("sky", "grass", "dog"), seed: int = 0, bpe_dir: str = str(BPE), arch: ArchConfig = SMALL_ARCH
) -> str:
    """A tiny random model as an ifseg-deploy bundle, with class embeddings from its token table."""
    from ifseg_deploy.checkpoint.bundle import save_bundle
    from ifseg_deploy.runtime.vocabulary import Vocabulary
    from ifseg_deploy.text.tokenizer import OFATokenizer

    model = make_tiny_model(seed, arch)
    classes = Vocabulary(OFATokenizer(bpe_dir), model.embed_tokens.weight).class_embeddings(list(categories))
    meta = {"arch": model.cfg.to_dict(), "categories": list(categories)}
    save_bundle(str(path), model.state_dict(), classes, meta)
    return str(path)


@pytest.fixture
def tiny_bundle(tmp_path, bpe_dir) -> str:
    return save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)


#: TINY_ARCH on an 8x8 grid (128-pixel targets): the same code path as 32x32, ~20x cheaper.
TRAIN_ARCH = dataclasses.replace(TINY_ARCH, seg_grid=8, encoder_grid=8, image_bucket_size=8)


def tiny_checkpoint(folder: Path, seed: int = 0) -> str:
    """A random 8x8-grid SegOFA saved in the IFSeg layout, with the BPE files next to it."""
    model = make_tiny_model(seed, TRAIN_ARCH)
    path = save_fairseq_checkpoint(
        model, folder / "tiny.pt", class_embeds=torch.zeros(1, TRAIN_ARCH.embed_dim), categories=["thing"]
    )
    for f in ("encoder.json", "vocab.bpe", "dict.txt"):
        os.symlink(BPE / f, folder / f)
    return path
