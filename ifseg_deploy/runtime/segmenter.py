"""The embeddable inference API: image -> label map at the original size.

image -> preprocess -> backend (backbone, encoder, parallel decoder) -> kNN smoothing ->
bilinear up-sampling to the original size -> argmax.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import load_model
from ..errors import IFSegError
from ..model import grid_size
from ..postprocess.knn import knn_smooth, resolve_backend
from ..postprocess.upsample import upsample_argmax
from ..preprocess import LONG_SIDE_MAX, SHORT_SIDE, preprocess, read_image
from ..text.tokenizer import OFATokenizer, find_bpe_dir
from .torch_backend import TorchBackend
from .vocabulary import PreparedVocabulary, Vocabulary

log = logging.getLogger(__name__)
ImageInput = Union[str, np.ndarray]
#: Timed stages in pipeline order. PyTorch splits the network into backbone / encoder / decoder;
#: ONNX Runtime and TensorRT time it as one "network" stage.
STAGES = ("preprocess", "backbone", "encoder", "decoder", "network", "knn", "upsample")


@dataclass
class SegmentationResult:
    """Output for one image."""

    labels: np.ndarray  # (H, W) int64 class index per pixel at the ORIGINAL size
    probs: np.ndarray  # (h, w, N) float32: kNN-smoothed probabilities (plain softmax when kNN is off)
    logits: np.ndarray  # (h, w, N) float32 decoder logits of the grid
    categories: List[str]
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds per measured stage (see STAGES)

    @property
    def grid(self) -> Tuple[int, int]:
        return self.logits.shape[0], self.logits.shape[1]

    @property
    def lowres_labels(self) -> np.ndarray:
        """Argmax of the grid scores ``(h, w)``."""
        return self.probs.argmax(-1)


class Segmenter:
    """Segments images into a run-time list of categories.

    Example::

        seg = Segmenter.from_checkpoint("ofa_tiny_ifseg.safetensors", categories=["grass", "cat", "dog"])
        result = seg.segment("photo.jpg")
        seg.set_categories(["road", "car", "person"])  # no weight reload
    """

    def __init__(
        self,
        backend,
        vocabulary: Vocabulary,
        categories: Optional[Sequence[str]] = None,
        knn_k: int = 3,
        knn_iters: int = 25,
        knn_backend: str = "auto",
        short_side: int = SHORT_SIDE,
        long_side_max: int = LONG_SIDE_MAX,
        window: Optional[int] = None,
    ):
        if window is not None and (window < 16 or window % 16):
            raise IFSegError(f"--window must be a positive multiple of 16 pixels (got {window})")
        if knn_k < 1 or knn_iters < 0:
            raise IFSegError(f"--knn-k must be >= 1 and --knn-iters >= 0 (got {knn_k}, {knn_iters})")
        self.backend = backend
        self.vocabulary = vocabulary
        self.knn_k = knn_k
        self.knn_iters = knn_iters
        self.knn_backend = resolve_backend(knn_backend)
        self.short_side = short_side
        self.long_side_max = long_side_max
        self.window = window
        self._vocab: PreparedVocabulary = vocabulary.prepare(categories)

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        categories: Optional[Sequence[str]] = None,
        bpe_dir: Optional[str] = None,
        device: str = "cpu",
        half: bool = False,
        class_words: Optional[Dict[str, Sequence[str]]] = None,
        **kwargs,
    ) -> "Segmenter":
        """PyTorch runtime from an ``ofa_*.pt``, IFSeg checkpoint or ifseg-deploy bundle
        (``class_words``: word lists of hierarchical classes, see :class:`Vocabulary`)."""
        loaded = load_model(path)
        if loaded.kind == "ofa":
            log.warning("%s is a plain OFA checkpoint: its segmentation head is untrained; run `ifseg-deploy train` first", path)
        tokenizer = OFATokenizer(find_bpe_dir(bpe_dir, path))
        backend = TorchBackend(loaded.model, device, half)
        table = backend.model.embed_tokens.weight
        stored = loaded.class_embeds.to(table) if loaded.class_embeds is not None else None
        vocab = Vocabulary(tokenizer, table, loaded.prompt_prefix, loaded.categories, stored, class_words)
        kwargs.setdefault("short_side", loaded.arch.image_size)
        kwargs.setdefault("long_side_max", 4 * loaded.arch.image_size)
        return cls(backend, vocab, categories, **kwargs)

    @property
    def categories(self) -> List[str]:
        return list(self._vocab.categories)

    def set_categories(self, categories: Sequence[str]) -> None:
        """Switch the category list (recomputes prompt and class embeddings only)."""
        self._vocab = self.vocabulary.prepare(categories)

    def _load(self, image: ImageInput) -> np.ndarray:
        return read_image(image) if isinstance(image, str) else image

    def segment(self, image: ImageInput) -> SegmentationResult:
        """Segment one image (a path or an RGB uint8 array)."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: Iterable[ImageInput], batch_size: int = 8) -> List[SegmentationResult]:
        """Segment many images; images whose resized shapes agree run as one batch."""
        images = list(images)
        results: List[Optional[SegmentationResult]] = [None] * len(images)
        pending: Dict[Tuple[int, int], List[Tuple[int, np.ndarray, torch.Tensor, float]]] = {}
        for i, image in enumerate(images):
            t0 = time.perf_counter()
            rgb = self._load(image)
            x = preprocess(rgb, self.short_side, self.long_side_max)
            key = tuple(x.shape[1:])
            pending.setdefault(key, []).append((i, rgb, x, (time.perf_counter() - t0) * 1e3))
            if len(pending[key]) == batch_size:
                self._run(pending.pop(key), results)
        for group in pending.values():
            self._run(group, results)
        return results  # type: ignore[return-value]

    def _graph_knn(self) -> bool:
        """True when the backend's exported graph smooths with exactly this segmenter's kNN settings."""
        io = getattr(self.backend, "io", None)
        return io is not None and self.knn_iters > 0 and (io.knn_k, io.knn_iters) == (self.knn_k, self.knn_iters)

    def _network(self, images: torch.Tensor, timings: Dict[str, float]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Logits, features and (when the graph computes them) kNN-smoothed probabilities of the whole
        grid: one pass, or overlapping windows for large inputs."""
        vocab = self._vocab
        if self.window is not None and max(images.shape[2:]) > self.window:
            return self._slide(images, timings) + (None,)
        if self._graph_knn():
            out = self.backend.run_all(images, vocab.prompt_embeds, vocab.class_embeds, timings)
            return out["logits"].float(), out["features"].float(), out["knn_probs"].float()
        return self.backend.run(images, vocab.prompt_embeds, vocab.class_embeds, timings) + (None,)

    def _slide(self, images: torch.Tensor, timings: Dict[str, float]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sliding-window inference: ``window``-pixel crops on the 16-pixel grid with a stride of
        2/3 window; logits and features of cells seen by several crops are averaged."""
        vocab = self._vocab
        b, _, height, width = images.shape
        gh, gw = grid_size(height, width)
        x = F.pad(images, (0, max(gw * 16, self.window) - width, 0, max(gh * 16, self.window) - height))
        cells = self.window // 16
        stride = max(1, 2 * cells // 3)

        def starts(n: int) -> List[int]:
            last = max(0, n - cells)
            out = list(range(0, last + 1, stride))
            return out if out[-1] == last else out + [last]

        logit_sum = feat_sum = count = None
        for r in starts(gh):
            for c in starts(gw):
                crop = x[:, :, r * 16 : r * 16 + self.window, c * 16 : c * 16 + self.window]
                lg, ft = self.backend.run(crop, vocab.prompt_embeds, vocab.class_embeds, timings)
                kh, kw = min(cells, gh - r), min(cells, gw - c)
                lg = lg.reshape(b, cells, cells, -1)[:, :kh, :kw]
                ft = ft.reshape(b, cells, cells, -1)[:, :kh, :kw]
                if logit_sum is None:
                    logit_sum = lg.new_zeros(b, gh, gw, lg.shape[-1])
                    feat_sum = ft.new_zeros(b, gh, gw, ft.shape[-1])
                    count = lg.new_zeros(1, gh, gw, 1)
                logit_sum[:, r : r + kh, c : c + kw] += lg
                feat_sum[:, r : r + kh, c : c + kw] += ft
                count[:, r : r + kh, c : c + kw] += 1
        return (logit_sum / count).reshape(b, gh * gw, -1), (feat_sum / count).reshape(b, gh * gw, -1)

    def _run(self, group, results) -> None:
        timings: Dict[str, float] = {}
        images = torch.stack([x for _, _, x, _ in group])
        grid = grid_size(images.shape[2], images.shape[3])
        vocab = self._vocab
        logits, feats, smoothed = self._network(images, timings)
        t0 = time.perf_counter()
        probs = torch.softmax(logits, dim=-1)
        scores = logits
        if smoothed is not None:
            probs = scores = smoothed
        elif self.knn_iters > 0:
            probs = knn_smooth(probs, feats, self.knn_k, self.knn_iters, self.knn_backend)
            scores = probs
            timings["knn"] = (time.perf_counter() - t0) * 1e3
        n = len(group)
        for j, (i, rgb, _, t_pre) in enumerate(group):
            t0 = time.perf_counter()
            labels = upsample_argmax(scores[j : j + 1], grid, rgb.shape[:2])[0]
            t_up = (time.perf_counter() - t0) * 1e3
            per_image = {k: v / n for k, v in timings.items()}
            per_image.update(preprocess=t_pre, upsample=t_up)
            results[i] = SegmentationResult(
                labels=labels.cpu().numpy(),
                probs=probs[j].reshape(grid[0], grid[1], -1).cpu().numpy(),
                logits=logits[j].reshape(grid[0], grid[1], -1).cpu().numpy(),
                categories=list(vocab.categories),
                timings={s: per_image[s] for s in STAGES if s in per_image},
            )
