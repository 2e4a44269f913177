"""``ifseg-deploy info CHECKPOINT``: what a model file holds."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import load_model


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="show architecture, size and categories of a checkpoint or bundle")
    p.add_argument("checkpoint", help="ofa_*.pt, IFSeg checkpoint or .safetensors bundle")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def describe(path: str) -> dict:
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


def run(args) -> int:
    d = describe(args.checkpoint)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    width = max(len(k) for k in d)
    for k, v in d.items():
        if k == "parameters":
            v = f"{v:,} ({v / 1e6:.1f} M)"
        elif k == "categories":
            v = ", ".join(v) if v else "(none stored: pass --categories)"
        print(f"{k:<{width}}  {v}")
    return 0
