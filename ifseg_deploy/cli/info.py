"""``ifseg-deploy info MODEL``: what a checkpoint, bundle or exported model holds; ``ifseg-deploy info``
alone: the models known by name and which of them are in the cache."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import load_model
from ..runtime.loader import backend_for


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info",
        help="show architecture, size and categories of a checkpoint, bundle or exported model "
        "(no model: list the models known by name and the cache)",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="ofa_*.pt, IFSeg checkpoint, .safetensors bundle, an export (.onnx, .engine, <stem>_openvino/), "
        "or a model name (ofa-tiny, ...)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def describe_export(path: str, backend: str) -> dict:
    """An exported model, from its side file: architecture, graph interface and options, verification."""
    from ..runtime.openvino_backend import ir_path
    from ..runtime.sidecar import read_vocab

    side = read_vocab(ir_path(path) if backend == "openvino" else path)
    arch, contract, export = side.arch, side.contract, side.export
    verification = export.get("verification", {})
    precision = verification.get("precision", {})
    return {
        "path": path,
        "kind": {"onnxruntime": "ONNX graph", "tensorrt": "TensorRT engine", "openvino": "OpenVINO IR"}[backend],
        "size": arch.size_name,
        "backbone": f"{arch.resnet_name} {list(arch.resnet_blocks)}",
        "embed_dim": arch.embed_dim,
        "layers": [arch.encoder_layers, arch.decoder_layers],
        "heads": arch.heads,
        "precision": export.get("precision", "fp32"),
        "input": "dynamic batch and size"
        if contract.dynamic
        else f"static {contract.batch}x3x{contract.image_size[0]}x{contract.image_size[1]}",
        "position_biases": "folded into constants"
        if not contract.dynamic
        else "inputs, computed once per input size by the runtime"
        if contract.bias_inputs
        else "computed in the graph",
        "knn": f"in-graph (k={contract.knn_k}, {contract.knn_iters} iterations)" if contract.knn_iters else "host",
        "upsample": "in-graph" if contract.upsample else "host",
        "inputs": contract.input_names,
        "outputs": contract.output_names,
        "preprocessing_short_side": side.preprocessing.short_side,
        "verified": "yes" if verification.get("ok") else "no record",
        "logits_rel_rms_vs_fp32": precision.get("logits_rel_rms") if precision else None,
        "num_classes": None if side.class_embeds is None else int(side.class_embeds.shape[0]),
        "categories": side.categories,
        "prompt_prefix": side.prompt_prefix,
        "exported_by": f"ifseg-deploy {export.get('version', '?')} from {export.get('source', '?')}",
    }


def describe(path: str) -> dict:
    """A checkpoint or bundle (weights loaded), or an exported model (:func:`describe_export`)."""
    backend = backend_for(path)
    if backend != "torch":
        return describe_export(path, backend)
    loaded = load_model(path)
    arch = loaded.arch
    params = sum(p.numel() for p in loaded.model.parameters())
    return {
        "path": path,
        "kind": {"ofa": "plain OFA", "ifseg": "IFSeg fine-tuned", "bundle": "ifseg-deploy bundle"}[loaded.kind],
        "size": arch.size_name,
        "backbone": f"{arch.resnet_name} {list(arch.resnet_blocks)}",
        "embed_dim": arch.embed_dim,
        "ffn_dim": arch.ffn_dim,
        "layers": [arch.encoder_layers, arch.decoder_layers],
        "heads": arch.heads,
        "image_size": arch.image_size,
        "parameters": params,
        "dtype": loaded.stored_dtype,
        "vocab_size": arch.vocab_size,
        "num_classes": None if loaded.class_embeds is None else int(loaded.class_embeds.shape[0]),
        "categories": loaded.categories,
        "prompt_prefix": loaded.prompt_prefix,
    }


def models_table() -> dict:
    """Each model known by name -> its cached file and size, or where it would be downloaded from."""
    from ..hub import MODELS, cache_dir, cached_models

    cached = {m.name: m for m in cached_models()}
    rows = {"cache": cache_dir()}
    for name, model in MODELS.items():
        hit = cached.get(name)
        how = "from" if model.url else "by hand from"
        rows[name] = f"{hit.path} ({hit.size_text})" if hit else f"not cached; {how} {model.source}"
    return rows


def run(args) -> int:
    d = describe(args.checkpoint) if args.checkpoint else models_table()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    width = max(len(k) for k in d)
    for k, v in d.items():
        if k == "parameters":
            v = f"{v:,} ({v / 1e6:.1f} M)"
        elif k == "categories":
            v = ", ".join(v) if v else "(none stored: pass --categories)"
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            v = ", ".join(v)
        elif v is None:
            continue
        print(f"{k:<{width}}  {v}")
    return 0
