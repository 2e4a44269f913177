"""What the Python models of a Triton repository compute, without Triton itself.

``export --format triton`` writes one ``model.py`` that moves tensors between Triton and these
classes; everything else is this package's own code, so the server answers exactly what the
local :class:`~ifseg_deploy.runtime.segmenter.Segmenter` answers:

* :class:`HostPipeline` (model ``ifseg``): requests of (encoded image or RGB, category list) ->
  label maps. Decoding, the stored preprocessing, the category list -> prompt / class
  embeddings (cached per list), kNN smoothing and up-sampling are the Segmenter's stages; the
  network runs through a callable (a BLS request to ``ifseg_network`` in the server, a local
  ONNX Runtime session when the exporter validates a repository).
* :class:`NetworkRunner` (model ``ifseg_network`` on CPU servers): the exported graph through
  ONNX Runtime (:class:`~ifseg_deploy.runtime.onnx_backend.OnnxBackend`).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..model.encoder import check_input_shape
from ..preprocess import decode_image
from ..runtime.backend import Backend, Capabilities
from ..runtime.graph_contract import FEATURES, KNN_PROBS, LABELS, LOGITS, OUTPUT_SIZE, VALUE_INPUTS, GraphContract
from ..runtime.loader import vocabulary_for
from ..runtime.segmenter import SegmentationResult, Segmenter, segment_each
from ..runtime.sidecar import read_vocab
from ..runtime.vocabulary import PreparedVocabulary, Vocabulary
from ..text.prompt import parse_categories
from .names import (
    BPE_FOLDER,
    DEFAULT_CATEGORIES,
    GRAPH_META,
    KNN_ITERS,
    KNN_K,
    MAX_BATCH,
    ONNX_FILE,
    PROVIDERS,
    REJECTED,
)

#: ``call(feeds, output_names) -> outputs``: the network on numpy arrays named as in the graph contract.
NetworkCall = Callable[[Dict[str, np.ndarray], Sequence[str]], Mapping[str, np.ndarray]]
#: One image of a request: encoded bytes or an RGB uint8 ``(H, W, 3)`` array.
ImageItem = Union[bytes, np.ndarray]


class RemoteNetwork(Backend):
    """A :class:`Backend` whose network runs elsewhere (``call``); it computes what ``contract`` says."""

    name = "triton-network"

    def __init__(self, call: NetworkCall, contract: GraphContract, arch: ArchConfig):
        self.call = call
        self.contract = contract
        self.arch = arch
        self.capabilities = Capabilities(
            device=torch.device("cpu"),
            knn=contract.in_graph_knn,
            upsample=contract.upsample,
            batch=contract.fixed_batch,
            image_size=contract.fixed_size,
        )

    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        feeds = self.contract.feeds(images, prompt_embeds, class_embeds, output_size)
        outputs = self.call({k: v.numpy() for k, v in feeds.items()}, self.contract.output_names)
        return {k: torch.from_numpy(np.ascontiguousarray(outputs[k])) for k in self.contract.output_names}


class CachedVocabulary:
    """A :class:`Vocabulary` whose prepared category lists are kept (least recently used first out),
    so the prompt and class embeddings of a list that many cameras send are computed once."""

    def __init__(self, vocabulary: Vocabulary, size: int = 64):
        self._prepare = functools.lru_cache(maxsize=size)(
            lambda key: vocabulary.prepare(None if key is None else list(key))
        )

    def prepare(self, categories: Optional[Sequence[str]] = None) -> PreparedVocabulary:
        return self._prepare(None if categories is None else tuple(categories))


@dataclass
class HostItem:
    """One image of a request with its category list (``None``: the model's stored list)."""

    image: ImageItem
    categories: Optional[str] = None


class HostPipeline:
    """The client-facing model: items -> :class:`SegmentationResult` or a one-line error each.

    ``folder`` is the model's version folder holding ``model.vocab.safetensors`` and ``bpe/``;
    ``params`` the ``config.pbtxt`` parameters (``knn_k``, ``knn_iters``, ``max_batch``, ``categories``:
    the list of requests that send none).
    """

    def __init__(self, folder: str, call: NetworkCall, params: Mapping[str, str]):
        path = os.path.join(folder, ONNX_FILE)  # the side file is named after the (absent) graph file
        side = read_vocab(path)
        vocab = CachedVocabulary(vocabulary_for(side.model_info(path, "onnx"), os.path.join(folder, BPE_FOLDER)))
        self.default = tuple(parse_categories(params[DEFAULT_CATEGORIES])) if params.get(DEFAULT_CATEGORIES) else None
        self.max_batch = int(params.get(MAX_BATCH, 8))
        self.segmenter = Segmenter(
            RemoteNetwork(call, side.contract, side.arch),
            vocab,
            self.default,  # type: ignore[arg-type]
            knn_k=int(params.get(KNN_K, 3)),
            knn_iters=int(params.get(KNN_ITERS, 25)),
            preprocessing=side.preprocessing,
        )

    def run(self, items: Sequence[HostItem]) -> List[Union[SegmentationResult, str]]:
        """Segment every item; items sharing a category list run through the network together
        (images that pre-process to one size form one batch). An item that cannot be served gets
        its error message instead of a result; a bad list's message starts with ``REJECTED``."""
        out: List[Union[SegmentationResult, str, None]] = [None] * len(items)
        groups: Dict[Optional[Tuple[str, ...]], List[Tuple[int, np.ndarray]]] = {}
        for i, item in enumerate(items):
            try:
                key = tuple(parse_categories(item.categories)) if item.categories else self.default
            except IFSegError as e:
                out[i] = f"{REJECTED}: {e}"
                continue
            try:
                rgb = decode_image(item.image, name="IMAGE") if isinstance(item.image, bytes) else item.image
                if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
                    raise IFSegError(f"RGB must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
            except IFSegError as e:
                out[i] = str(e)
                continue
            groups.setdefault(key, []).append((i, rgb))
        for key, members in groups.items():
            try:
                self.segmenter.set_categories(key)  # type: ignore[arg-type]
                # the prompt-length rule of the model (a 1x1 grid passes the grid rule)
                check_input_shape(
                    self.segmenter.backend.arch, (1, 1), len(self.segmenter.vocabulary.prepare(key).prompt_ids)
                )
            except IFSegError as e:
                for i, _ in members:
                    out[i] = f"{REJECTED}: {e}"
                continue
            results = segment_each(self.segmenter, [rgb for _, rgb in members], self.max_batch)
            for (i, _), res in zip(members, results):
                out[i] = str(res) if isinstance(res, IFSegError) else res
        return out  # type: ignore[return-value]


class NetworkRunner:
    """The network model on a CPU server: the exported graph through ONNX Runtime.

    ``params``: ``graph_meta`` (JSON of the side file's ``arch`` and ``export`` fields) and
    ``providers`` (default ``cpu``)."""

    def __init__(self, folder: str, params: Mapping[str, str]):
        from ..runtime.onnx_backend import OnnxBackend, parse_providers

        meta = json.loads(params[GRAPH_META])
        self.contract = GraphContract.from_meta(meta)
        self.backend = OnnxBackend(
            os.path.join(folder, ONNX_FILE),
            self.contract,
            ArchConfig.from_dict(meta["arch"]),
            parse_providers(params.get(PROVIDERS, "cpu")),
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Graph inputs by contract name -> the graph's outputs by name (shapes checked first)."""
        size = feeds.get(OUTPUT_SIZE)
        out = self.backend.run(
            *(torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in VALUE_INPUTS),
            output_size=None if size is None else (int(size[0]), int(size[1])),
        )
        named = {LOGITS: out.logits, FEATURES: out.features, KNN_PROBS: out.knn_probs, LABELS: out.labels}
        return {k: named[k].cpu().numpy() for k in self.contract.output_names}
