"""A trained bundle's held-out accuracy, recomputed through an exported graph.

``ifseg-deploy train`` stores the pixel accuracy and mIoU of its fixed held-out set of artificial
images (:mod:`ifseg_deploy.artificial.holdout`). Artificial images are cell embeddings that enter
the network after the backbone, as the encoder's image tokens, so the graph is cut there: the
input of the encoder's first image-token LayerNorm (``patch_layernorm_embedding``, reached through
any ``Cast`` in front of it) becomes a graph input (:func:`token_graph`, ``onnx.utils.Extractor``),
and the same nodes in the same precision compute the logits from the artificial tokens (ONNX
Runtime, CPU). That tensor is ``image tokens + image type embedding`` (``Encoder.forward``); the
simplifier may fold the type embedding into the image projection's bias, so the sum is formed
here, in float32, and fed in the cut tensor's type. A dynamic graph still reads the grid size
and batch from the backbone's feature shape, so ``images`` is fed blank ``16g x 16g`` pictures, one
per token image (their values reach nothing but ``Shape`` nodes).

The fp32 graph reproduces the stored figures (up to float rounding at arg-max ties); a reduced
precision graph may lose at most :data:`MAX_DROP` of either figure against the fp32 graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import onnx
import torch
from torch import Tensor

from ...artificial.holdout import DEFAULT_HOLDOUT_SIZE, score_holdout
from ...artificial.images import MAX_CELLS, ArtificialImages
from ...checkpoint import LoadedModel
from ...errors import IFSegError
from ...model import grid_size
from ...model.segofa import stack_biases
from ...runtime.graph_contract import BIAS_INPUTS, CLASSES, IMAGES, LOGITS, PROMPT, GraphContract
from ...runtime.vocabulary import Vocabulary
from ...text.categories_file import ClassSpec

#: Largest drop of held-out pixel accuracy or mIoU against the fp32 graph, as a fraction
#: (0.005 = 0.5 percentage points): half a point for fp16, whose rounding should not change a
#: label, two points for int8, whose quantisation may move boundary cells.
MAX_DROP = {"fp16": 0.005, "int8": 0.02}
#: Name scope of the encoder's image-token LayerNorm in the traced graph.
PATCH_NORM_SCOPE = "/model/encoder/patch_layernorm_embedding/"
METRICS = ("pixel_acc", "miou")


@dataclass
class HoldoutSet:
    """A trained bundle's held-out set with the inputs it was scored with."""

    images: ArtificialImages
    prompt_embeds: Tensor  # (1, L, C) float32, the bundle's categories
    class_embeds: Tensor  # (N, C) float32, the bundle's stored class embeddings
    type_embed: Tensor  # (C,) float32, the encoder's image type embedding
    size: int  # number of held-out images
    stored: Dict[str, float]  # the bundle's figures ("pixel_acc", "miou"; fractions)
    biases: Dict[str, np.ndarray] = field(default_factory=dict)  # the set's position biases, for graphs that take them


def holdout_set(loaded: LoadedModel, vocabulary: Vocabulary, contract: GraphContract) -> Optional[HoldoutSet]:
    """The held-out set of a bundle written by ``ifseg-deploy train`` (its classes, hierarchy,
    grid, coarse-grid limit and size from the metadata, and the position biases of its grid when
    the ``contract``'s graph takes them as inputs); ``None`` when the file stores no held-out figures."""
    stored = loaded.metadata.get("holdout")
    if not stored or not loaded.categories:
        return None
    training = loaded.metadata.get("training", {})
    hierarchy = training.get("hierarchy", {})
    classes = [ClassSpec(c, tuple(hierarchy.get(c, (c,)))) for c in loaded.categories]
    words = vocabulary.word_embeddings([w for c in classes for w in c.words]).detach().float().cpu()
    images = ArtificialImages(classes, words, loaded.arch.seg_grid, int(training.get("max_cells", MAX_CELLS)))
    vocab = vocabulary.prepare(loaded.categories)
    biases = {}
    if contract.bias_inputs:
        g = loaded.arch.seg_grid
        with torch.inference_mode():
            stacked = stack_biases(loaded.model.position_biases((g, g), vocab.prompt_embeds.shape[1]))
        biases = {name: t.float().cpu().numpy() for name, t in zip(BIAS_INPUTS, stacked)}
    return HoldoutSet(
        images=images,
        prompt_embeds=vocab.prompt_embeds.detach().float().cpu(),
        class_embeds=vocab.class_embeds.detach().float().cpu(),
        type_embed=loaded.model.encoder.type_embedding.weight[1].detach().float().cpu(),
        size=int(training.get("holdout_size", DEFAULT_HOLDOUT_SIZE)),
        stored={k: float(stored[k]) for k in METRICS},
        biases=biases,
    )


def image_token_tensor(model: onnx.ModelProto) -> str:
    """Name of the ``(B, h*w, C)`` tensor ``image tokens + type embedding`` that the encoder's
    image-token LayerNorm reads (before any ``Cast`` in front of it).

    Raises :class:`IFSegError` when the graph has no single such tensor.
    """
    norms = [n for n in model.graph.node if n.name.startswith(PATCH_NORM_SCOPE) and n.op_type == "LayerNormalization"]
    if len(norms) != 1:
        raise IFSegError(
            f"cannot find the encoder's image-token input in the graph ({len(norms)} LayerNormalization nodes under "
            f"{PATCH_NORM_SCOPE}), so the held-out check cannot run; nothing was written"
        )
    producers = {o: n for n in model.graph.node for o in n.output}
    name = norms[0].input[0]
    while name in producers and producers[name].op_type == "Cast":
        name = producers[name].input[0]
    return name


def token_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The part of ``model`` that computes ``logits`` from the image tokens (an input named as in
    :func:`image_token_tensor`), the vocabulary inputs, the position biases of a graph that takes
    them and, for shapes only, ``images``."""
    cut = image_token_tensor(model)
    inputs = [cut] + [i.name for i in model.graph.input if i.name in (IMAGES, PROMPT, CLASSES) + BIAS_INPUTS]
    return onnx.utils.Extractor(model).extract_model(inputs, [LOGITS])


def graph_holdout(model: onnx.ModelProto, hset: HoldoutSet, contract: GraphContract) -> Dict[str, float]:
    """``{"pixel_acc", "miou"}`` of the graph ``model`` on the held-out set (ONNX Runtime, CPU).

    A static graph runs its fixed batch (the last batch padded by repetition); its grid must be
    the set's (checked by the caller).
    """
    import onnxruntime as ort

    cut = image_token_tensor(model)
    session = ort.InferenceSession(token_graph(model).SerializeToString(), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    token_dtype = np.float16 if types[cut] == "tensor(float16)" else np.float32
    g = hset.images.grid
    batch = contract.batch if not contract.dynamic else 8
    h, w = (16 * g, 16 * g) if contract.dynamic else contract.image_size
    blank = np.zeros((batch, 3, h, w), np.float32)
    vocab = {PROMPT: hset.prompt_embeds.numpy(), CLASSES: hset.class_embeds.numpy(), **hset.biases}

    def predict(tokens: Tensor) -> Tensor:
        n = tokens.shape[0]
        x = (tokens + hset.type_embed).numpy().astype(token_dtype)
        if not contract.dynamic and n < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
        feeds = {k: v for k, v in dict(vocab, **{IMAGES: blank[: len(x)], cut: x}).items() if k in types}
        return torch.from_numpy(session.run([LOGITS], feeds)[0][:n])

    return score_holdout(predict, hset.images, hset.size, batch)


@dataclass
class HoldoutCheck:
    """Held-out figures of the fp32 and the reduced-precision graph, against :data:`MAX_DROP`."""

    precision: str
    max_drop: float  # fraction (0.005 = 0.5 points)
    gated: bool = True
    size: int = 0
    stored: Optional[Dict[str, float]] = None
    fp32: Optional[Dict[str, float]] = None
    reduced: Optional[Dict[str, float]] = None
    note: str = ""  # why the check does not apply

    @property
    def applicable(self) -> bool:
        return self.reduced is not None

    @property
    def drop(self) -> float:
        """Largest loss of pixel accuracy or mIoU against the fp32 graph (fraction; 0 when not applicable)."""
        if not self.applicable:
            return 0.0
        return max(self.fp32[k] - self.reduced[k] for k in METRICS)

    @property
    def ok(self) -> bool:
        return self.drop <= self.max_drop + 1e-12

    def lines(self) -> List[str]:
        if not self.applicable:
            return [f"held-out accuracy: not applicable ({self.note})"]

        def fig(d: Dict[str, float]) -> str:
            return f"pixel acc {100 * d['pixel_acc']:.2f}%, mIoU {100 * d['miou']:.2f}%"

        gate = f"gate {100 * self.max_drop:.1f} pt{'' if self.gated else ', not enforced: gate=False'}"
        return [
            f"held-out accuracy through the graphs ({self.size} artificial images; stored at training: "
            f"{fig(self.stored)}):",
            f"  fp32 graph: {fig(self.fp32)}",
            f"  {self.precision} graph: {fig(self.reduced)}; drop {100 * self.drop:.2f} pt ({gate}); "
            f"{'ok' if self.ok else 'BELOW GATE'}",
        ]

    def to_dict(self) -> dict:
        if not self.applicable:
            return {"applicable": False, "note": self.note}
        return {
            "applicable": True,
            "ok": self.ok,
            "gated": self.gated,
            "images": self.size,
            "max_drop": self.max_drop,
            "drop": self.drop,
            "stored": self.stored,
            "fp32_graph": self.fp32,
            "reduced_graph": self.reduced,
        }


def check_holdout(
    fp32: onnx.ModelProto,
    reduced: onnx.ModelProto,
    hset: Optional[HoldoutSet],
    contract: GraphContract,
    precision: str,
    gated: bool,
    no_set: str,
) -> HoldoutCheck:
    """Score ``hset`` through the ``fp32`` and the ``reduced`` graph; ``no_set`` says why there is
    no set when ``hset`` is None. Raises :class:`IFSegError` when a graph cannot be cut."""
    check = HoldoutCheck(precision, MAX_DROP[precision], gated)
    if hset is None:
        check.note = no_set
        return check
    g = hset.images.grid
    if not contract.dynamic and grid_size(*contract.image_size) != (g, g):
        gh, gw = grid_size(*contract.image_size)
        check.note = (
            f"the static graph's {gh}x{gw} grid is not the held-out set's {g}x{g}; export dynamic=True to check it"
        )
        return check
    check.size, check.stored = hset.size, hset.stored
    check.fp32 = graph_holdout(fp32, hset, contract)
    check.reduced = graph_holdout(reduced, hset, contract)
    return check
