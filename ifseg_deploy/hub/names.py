"""The models ifseg-deploy knows by name, and where their files come from.

Official OFA pre-trained checkpoints: OFA-Sys/OFA ``checkpoints.md`` (one ``.pt`` per size on
OFA's Aliyun OSS bucket). GPT-2 BPE files: OFA-Sys/OFA ``utils/BPE`` on the ``main`` branch,
pinned by SHA-256 (the model's dictionary rows depend on the exact bytes). IFSeg's released
visualisation checkpoint: alinlab/ifseg ``README.md`` / ``visualize_segmentation_web.ipynb``
(Google Drive, which plain HTTP cannot fetch reliably, so it is a manual download).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

OFA_CHECKPOINTS = "https://ofa-beijing.oss-cn-beijing.aliyuncs.com/checkpoints/"
OFA_BPE = "https://raw.githubusercontent.com/OFA-Sys/OFA/main/utils/BPE/"


@dataclass(frozen=True)
class ModelFile:
    """A model known by name."""

    name: str  # what ``--checkpoint`` / ``load()`` accept, e.g. "ofa-tiny"
    filename: str  # the file's name in the cache and on a mirror, e.g. "ofa_tiny.pt"
    url: Optional[str]  # official download location; None: the file must be fetched by hand (``manual``)
    description: str
    manual: Optional[str] = None  # where a person downloads it when ``url`` is None

    @property
    def source(self) -> str:
        """The official location: the URL, or the page to download it from by hand."""
        return self.url or self.manual or ""


def _ofa(size: str, params: str) -> ModelFile:
    return ModelFile(
        f"ofa-{size}",
        f"ofa_{size}.pt",
        OFA_CHECKPOINTS + f"ofa_{size}.pt",
        f"OFA-{size.title()} pre-trained ({params})",
    )


#: Name -> model. The OFA sizes are plain OFA checkpoints (train them with ``ifseg-deploy train``);
#: ``ifseg-web-demo`` is IFSeg's fine-tuned model of the paper's web-image figure (categories
#: ``plant, grass, cat, dog, other``).
MODELS: Dict[str, ModelFile] = {
    m.name: m
    for m in (
        _ofa("tiny", "~33M parameters"),
        _ofa("medium", "~93M parameters"),
        _ofa("base", "~180M parameters"),
        _ofa("large", "~470M parameters"),
        _ofa("huge", "~930M parameters"),
        ModelFile(
            "ifseg-web-demo",
            "figure_checkpoint.pt",
            None,
            "IFSeg web-image visualisation model (OFA-Base; plant, grass, cat, dog, other)",
            manual="https://drive.google.com/file/d/167sIrrSsBTRQlrVHYMKYoWA5A9r04eAD/view",
        ),
    )
}

#: The GPT-2 BPE files of OFA's ``utils/BPE`` and their SHA-256 (a download with other bytes is refused).
BPE_SHA256: Dict[str, str] = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "dict.txt": "2c31c5b236661067fe8626775eb995ef5fe808ac87d2ad4a6ddbef68550f5cc6",
}
