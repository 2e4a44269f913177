"""Architecture description of a SegOFA model (inferred from weights, stored in bundles)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Tuple

from .errors import IFSegError

#: ResNet stage-3 block count -> the OFA name of the backbone.
RESNET_NAMES = {6: "resnet50", 23: "resnet101", 36: "resnet152"}

#: (width, encoder layers) -> the official OFA size name, for display only.
OFA_SIZES = {(256, 4): "tiny", (512, 4): "medium", (768, 6): "base", (1024, 12): "large", (1280, 24): "huge"}


@dataclass(frozen=True)
class ArchConfig:
    """Everything needed to build a :class:`~ifseg_deploy.model.segofa.SegOFA`."""

    embed_dim: int
    ffn_dim: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    resnet_blocks: Tuple[int, int, int] = (3, 4, 6)
    vocab_size: int = 59457
    max_text_positions: int = 1026
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    encoder_grid: int = 32  # orig_patch_image_size // 16: grid of the encoder's image position tables
    seg_grid: int = 32  # patch_image_size // 16: grid of the decoder's seg position tables
    attn_scale_factor: float = 2.0
    dropout: float = 0.1
    drop_path: float = 0.1
    layer_norm_eps: float = 1e-5
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def resnet_name(self) -> str:
        return RESNET_NAMES.get(self.resnet_blocks[2], f"resnet(layer3={self.resnet_blocks[2]})")

    @property
    def size_name(self) -> str:
        return OFA_SIZES.get((self.embed_dim, self.encoder_layers), "custom")

    @property
    def image_size(self) -> int:
        """Short side (pixels) of the evaluation resize: patch_image_size."""
        return self.seg_grid * 16

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["resnet_blocks"] = list(self.resnet_blocks)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ArchConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        missing = {"embed_dim", "ffn_dim", "encoder_layers", "decoder_layers", "heads"} - set(d)
        if missing:
            raise IFSegError(
                f"architecture description lacks {sorted(missing)}; re-export the bundle with ifseg-deploy"
            )
        kw = {k: v for k, v in d.items() if k in known}
        if "resnet_blocks" in kw:
            kw["resnet_blocks"] = tuple(int(b) for b in kw["resnet_blocks"])
        return cls(**kw)


def ofa_preset(name: str) -> ArchConfig:
    """Shapes of the official OFA sizes (for benchmarks without weights)."""
    presets = {
        "tiny": (256, 1024, 4, 4, 4, (3, 4, 6)),
        "medium": (512, 2048, 4, 4, 8, (3, 4, 23)),
        "base": (768, 3072, 6, 6, 12, (3, 4, 23)),
        "large": (1024, 4096, 12, 12, 16, (3, 8, 36)),
        "huge": (1280, 5120, 24, 12, 16, (3, 8, 36)),
    }
    if name not in presets:
        raise IFSegError(f"unknown OFA size '{name}'; choose one of {', '.join(presets)}")
    c, ffn, enc, dec, heads, blocks = presets[name]
    return ArchConfig(
        embed_dim=c, ffn_dim=ffn, encoder_layers=enc, decoder_layers=dec, heads=heads, resnet_blocks=blocks
    )
