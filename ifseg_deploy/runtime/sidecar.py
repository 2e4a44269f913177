"""Side files of an exported model (read by every runtime, written by the exporter).

``<stem>.vocab.safetensors`` sits next to ``<stem>.onnx`` / ``<stem>.engine``: the token-embedding
table ``(V, C)`` the host needs to turn a category list into prompt and class embeddings, the
stored class embeddings of a fine-tuned model, and a JSON description (architecture, stored
categories, prompt prefix, preprocessing, export settings) in the ifseg-deploy bundle header
format. ``<stem>.engine.json`` describes a TensorRT engine build (TensorRT version, GPU, shapes).
The BPE files are never copied: pass ``--bpe-dir`` or keep them next to the model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from ..checkpoint.bundle import CLASS_EMBEDS, FORMAT_VERSION, META_KEY, load_bundle
from ..config import ArchConfig
from ..errors import IFSegError
from ..fileio import write_bytes
from ..preprocess import Preprocessing
from .backend import ModelInfo
from .graph_contract import GraphContract
from .position_feeds import PositionFeeds

VOCAB_SUFFIX = ".vocab.safetensors"
ENGINE_INFO_SUFFIX = ".json"
EMBED_TABLE = "embed_tokens.weight"
KIND = "engine-vocab"
POSITIONS_PREFIX = "positions."  # position weights of graphs that take their biases as inputs


def vocab_path(model_path: str) -> str:
    """``model.onnx`` / ``model.engine`` -> ``model.vocab.safetensors``."""
    return os.path.splitext(model_path)[0] + VOCAB_SUFFIX


def engine_info_path(engine_path: str) -> str:
    """``model.engine`` -> ``model.engine.json``."""
    return engine_path + ENGINE_INFO_SUFFIX


@dataclass
class VocabSidecar:
    """What the host side of an exported model needs."""

    embed_table: Tensor  # (V, C) float32
    class_embeds: Optional[Tensor]  # (N, C) stored class embeddings, if the model has them
    meta: Dict[str, Any]
    positions: Dict[str, Tensor] = field(
        default_factory=dict
    )  # position weights (``encoder.embed_positions.weight``, ...)

    @property
    def arch(self) -> ArchConfig:
        return ArchConfig.from_dict(self.meta.get("arch", {}))

    @property
    def categories(self) -> Optional[List[str]]:
        return self.meta.get("categories")

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(
            self.meta.get("preprocessing"), Preprocessing.short_side_rule(self.arch.image_size)
        )

    @property
    def contract(self) -> GraphContract:
        return GraphContract.from_meta(self.meta)

    @property
    def prompt_prefix(self) -> Optional[str]:
        return self.meta.get("prompt_prefix")

    @property
    def export(self) -> Dict[str, Any]:
        return self.meta.get("export", {})

    def position_feeds(self, device: torch.device = torch.device("cpu")) -> Optional[PositionFeeds]:
        """The host-side bias computation of a graph that takes its position biases as inputs, else None."""
        return PositionFeeds(self.arch, self.positions, device) if self.contract.bias_inputs else None

    def model_info(self, path: str, kind: str) -> ModelInfo:
        """The host-side description of the exported model ``path``."""
        return ModelInfo(
            path,
            kind,
            self.arch,
            self.embed_table,
            self.prompt_prefix,
            self.categories,
            self.class_embeds,
            self.preprocessing,
        )


def write_vocab(
    path: str,
    embed_table: Tensor,
    class_embeds: Optional[Tensor],
    meta: Dict[str, Any],
    positions: Optional[Dict[str, Tensor]] = None,
) -> None:
    """Write the side file atomically; the table is stored as float16 when that is lossless.
    ``positions``: the position weights (:func:`ifseg_deploy.model.segofa.position_state`) of a graph
    that takes its position biases as inputs."""
    from safetensors.torch import save

    table = embed_table.detach().float().cpu().contiguous()
    if torch.equal(table.half().float(), table):
        table = table.half()
    tensors = {EMBED_TABLE: table}
    if class_embeds is not None:
        tensors[CLASS_EMBEDS] = class_embeds.detach().float().cpu().contiguous()
    tensors.update((POSITIONS_PREFIX + k, v.detach().float().cpu().contiguous()) for k, v in (positions or {}).items())
    header = dict(meta, kind=KIND, format=FORMAT_VERSION)
    write_bytes(path, save(tensors, metadata={META_KEY: json.dumps(header)}))


def read_vocab(model_path: str) -> VocabSidecar:
    """The side file of ``model_path``; a clear error when it is missing or is something else."""
    path = vocab_path(model_path)
    if not os.path.isfile(path):
        raise IFSegError(
            f"{os.path.basename(path)} not found next to {model_path}; it holds the token-embedding table: "
            "copy it along or re-export with ifseg-deploy export"
        )
    tensors, class_embeds, meta = load_bundle(path)
    if meta.get("kind") != KIND or EMBED_TABLE not in tensors:
        raise IFSegError(f"{path} is not an ifseg-deploy engine side file; re-export with ifseg-deploy export")
    positions = {k[len(POSITIONS_PREFIX) :]: v for k, v in tensors.items() if k.startswith(POSITIONS_PREFIX)}
    return VocabSidecar(tensors[EMBED_TABLE], class_embeds, meta, positions)


def write_engine_info(engine_path: str, info: Dict[str, Any]) -> None:
    write_bytes(engine_info_path(engine_path), (json.dumps(info, indent=2) + "\n").encode())


def read_engine_info(engine_path: str) -> Dict[str, Any]:
    path = engine_info_path(engine_path)
    if not os.path.isfile(path):
        raise IFSegError(
            f"{os.path.basename(path)} not found next to {engine_path}; it records how the engine was built: "
            "copy it along or rebuild with ifseg-deploy export --format engine"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise IFSegError(
            f"cannot read {path} ({e}); rebuild the engine with ifseg-deploy export --format engine"
        ) from None
