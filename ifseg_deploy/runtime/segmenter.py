"""The embeddable inference API: image -> label map at the original size, as named stages.

``preprocess(images) -> Batch`` (decode, keep-ratio resize, normalise) -> ``infer(Batch) ->
NetworkOutputs`` (backbone, encoder, parallel decoder on any backend) -> ``postprocess(Batch,
NetworkOutputs) -> [SegmentationResult]`` (softmax, kNN smoothing, bilinear up-sampling to the
original size, argmax). The stages are public so a streaming pipeline can run them on different
threads; ``segment`` / ``segment_batch`` chain them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import IFSegError
from ..fileio import ResultFolder, write_npy, write_png
from ..model import grid_size
from ..model.encoder import addressable_grid
from ..postprocess.knn import resolve_backend
from ..postprocess.scores import grid_scores
from ..postprocess.upsample import upsample_argmax
from ..preprocess import Preprocessing, as_rgb, resized_shape
from ..text.categories_file import names_and_words, parse_category_spec
from ..visualize.overlay import overlay
from .backend import Backend, NetworkOutputs
from .vocabulary import PreparedVocabulary, Vocabulary

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: A path, an RGB numpy array, a PIL image or a CHW / HWC torch tensor (see :func:`ifseg_deploy.preprocess.as_rgb`).
ImageInput = Union[str, "os.PathLike[str]", np.ndarray, "PILImage", Tensor]
#: Timed stages in pipeline order. PyTorch splits the network into backbone / encoder / decoder;
#: exported graphs time it as one "network" stage; a server times its whole answer as "server".
STAGES = ("preprocess", "backbone", "encoder", "decoder", "network", "server", "knn", "upsample")
#: ``probs_transform(probs (B, h*w, N), features (B, h*w, C)) -> probs``: a hook between kNN
#: smoothing and up-sampling (temporal smoothing of video, for instance).
ProbsTransform = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SegmentationResult:
    """Output for one image."""

    labels: np.ndarray  # (H, W) int64 class index per pixel at the ORIGINAL size
    probs: np.ndarray  # (h, w, N) float32: kNN-smoothed probabilities (plain softmax when kNN is off)
    logits: np.ndarray  # (h, w, N) float32 decoder logits of the grid
    categories: List[str]
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds per measured stage (see STAGES)
    image: Optional[np.ndarray] = field(default=None, repr=False)  # (H, W, 3) RGB uint8 input, as segmented

    def plot(self, alpha: float = 0.5, contours: bool = False, font: Optional[str] = None) -> np.ndarray:
        """The colour overlay with legend, ``(H, W, 3)`` RGB uint8 (needs :attr:`image`); ``font``: a
        TrueType/OpenType file for the legend names (default: ``$IFSEG_FONT``, else an installed
        font covering them, :mod:`ifseg_deploy.visualize.fonts`)."""
        if self.image is None:
            raise IFSegError("this result holds no image to draw on")
        return overlay(self.image, self.labels, self.categories, alpha, contours, font=font)

    def save(
        self,
        folder: Union[str, ResultFolder],
        stem: str,
        alpha: float = 0.5,
        contours: bool = False,
        raw: bool = False,
        font: Optional[str] = None,
    ) -> List[str]:
        """Write ``<stem>_labels.png`` (uint8; uint16 above 255 classes), ``<stem>_overlay.png`` and,
        with ``raw``, ``<stem>_logits.npy`` / ``<stem>_probs.npy`` ``(h, w, N)`` float32, each
        atomically, into ``folder`` (a path or a :class:`~ifseg_deploy.fileio.ResultFolder`; ``stem``
        may hold sub-folders; ``font`` as for :meth:`plot`). The output policy of :mod:`ifseg_deploy.fileio` applies: a
        folder holding other files is written into, but none of them is replaced. Returns the paths written.

        Raises:
            IFSegError: a file the project did not write is in the way, or writing failed.
        """
        out = folder if isinstance(folder, ResultFolder) else ResultFolder(folder, "folder", exist_ok=True)
        names = [f"{stem}_labels.png", f"{stem}_overlay.png"] + (
            [f"{stem}_logits.npy", f"{stem}_probs.npy"] if raw else []
        )
        paths = [out.file(name) for name in names]
        write_png(paths[0], self.labels.astype(np.uint8 if len(self.categories) <= 255 else np.uint16))
        write_png(paths[1], self.plot(alpha, contours, font))
        if raw:
            write_npy(paths[2], self.logits.astype(np.float32))
            write_npy(paths[3], self.probs.astype(np.float32))
        return paths

    @property
    def grid(self) -> Tuple[int, int]:
        return self.logits.shape[0], self.logits.shape[1]

    @property
    def lowres_labels(self) -> np.ndarray:
        """Argmax of the grid scores ``(h, w)``."""
        return self.probs.argmax(-1)


@dataclass
class Batch:
    """Pre-processed images of one shape, ready for :meth:`Segmenter.infer`."""

    images: (
        Tensor  # (B, 3, h, w) float32, normalised to [-1, 1] (uint8 as decoded for a backend that pre-processes itself)
    )
    originals: List[np.ndarray]  # each (H, W, 3) RGB uint8 as decoded
    vocab: PreparedVocabulary  # the category list in force when the batch was made
    timings: List[Dict[str, float]]  # per image, milliseconds ({"preprocess": ...})

    @property
    def sizes(self) -> List[Tuple[int, int]]:
        """Original ``(H, W)`` of each image."""
        return [tuple(rgb.shape[:2]) for rgb in self.originals]

    @property
    def grid(self) -> Tuple[int, int]:
        """``(h, w)`` cells of the stride-16 grid of :attr:`images`."""
        return grid_size(self.images.shape[2], self.images.shape[3])


class Segmenter:
    """Segments images into a run-time list of categories.

    Example::

        seg = Segmenter.load("ofa_tiny_ifseg.safetensors", categories=["grass", "cat", "dog"])
        result = seg.segment("photo.jpg")
        seg.set_categories(["road", "car", "person"])  # no weight reload
    """

    def __init__(
        self,
        backend: Backend,
        vocabulary: Vocabulary,
        categories: Union[str, Sequence[str], None] = None,
        knn_k: int = 3,
        knn_iters: int = 25,
        knn_backend: str = "auto",
        preprocessing: Optional[Preprocessing] = None,
        window: Optional[int] = None,
    ):
        if window is not None and (window < 16 or window % 16):
            raise IFSegError(f"window={window}: must be a positive multiple of 16 pixels")
        if knn_k < 1 or knn_iters < 0:
            raise IFSegError(f"`knn_k` must be >= 1 and `knn_iters` >= 0 (got {knn_k}, {knn_iters})")
        if window is not None and backend.capabilities.preprocess:
            raise IFSegError("`window` does not apply to a backend that pre-processes the images itself (a server)")
        self.backend = backend
        self.vocabulary = vocabulary
        self.knn_k = knn_k
        self.knn_iters = knn_iters
        self.knn_backend = resolve_backend(knn_backend)
        self.preprocessing = preprocessing or Preprocessing()
        self.window = window
        # a backend that takes input tensors on its device gets the frames pre-processed there
        self._frame_device = backend.device if getattr(backend, "takes_device_frames", False) else None
        fuse = getattr(backend, "fuse_postprocess", None)
        if fuse is not None:  # kNN (the exact torch search) and up-sampling in the backend's graph, when it has one
            fuse((knn_k, knn_iters) if knn_iters and self.knn_backend in ("auto", "torch") else None)
        self._vocab: PreparedVocabulary
        self.set_categories(categories)

    @classmethod
    def load(
        cls,
        path: str,
        categories: Union[str, Sequence[str], None] = None,
        bpe_dir: Optional[str] = None,
        device: str = "auto",
        precision: Optional[str] = None,
        class_words: Optional[Dict[str, Sequence[str]]] = None,
        backend_options: Optional[Dict[str, object]] = None,
        **kwargs,
    ) -> "Segmenter":
        """A Segmenter over any model file (:func:`ifseg_deploy.runtime.loader.load`): checkpoint,
        bundle, ``.onnx`` or ``.engine``, with the preprocessing stored in it unless
        ``preprocessing=`` is given. ``kwargs`` as for the constructor."""
        from .loader import load

        rt = load(
            path,
            device=device,
            precision=precision,
            bpe_dir=bpe_dir,
            class_words=class_words,
            **(backend_options or {}),
        )
        kwargs.setdefault("preprocessing", rt.preprocessing)
        return cls(rt.backend, rt.vocabulary, categories, **kwargs)

    @property
    def categories(self) -> List[str]:
        return list(self._vocab.categories)

    @property
    def host_postprocess(self) -> bool:
        """Post-processing runs here, so a ``probs_transform`` (e.g. temporal smoothing) applies: not
        over a backend that pre- and post-processes the images itself (a server)."""
        return not self.backend.capabilities.preprocess

    def close(self) -> None:
        """Release the backend (a server connection)."""
        self.backend.close()

    def set_categories(self, categories: Union[str, Sequence[str], None]) -> None:
        """Switch the category list (recomputes prompt and class embeddings only): a list of names,
        the CLI's string (``"grass, cat, dog"``, or with word lists ``"animal: cat, dog; grass"``),
        or None for the model's stored list."""
        if isinstance(categories, str):
            categories, words = names_and_words(parse_category_spec(categories))
            self.vocabulary.class_words.update({k: list(v) for k, v in words.items()})
        self._vocab = self.vocabulary.prepare(categories)

    # -- stages ---------------------------------------------------------------------------

    def preprocess(self, images: Sequence[ImageInput]) -> Batch:
        """Decode and pre-process images that resize to one shape (:meth:`segment_batch` groups
        mixed sizes itself); each a path, RGB array, PIL image or tensor (:data:`ImageInput`).
        Raises :class:`IFSegError` for unreadable images or mixed shapes."""
        items = [self._prepare(image) for image in images]
        if not items:
            raise IFSegError("no images to segment")
        shapes = {tuple(x.shape) for _, x, _ in items}
        if len(shapes) > 1:
            raise IFSegError(
                f"images of one batch must pre-process to one size (got {sorted(s[1:] for s in shapes)}); use "
                f"segment_batch"
            )
        return Batch(
            torch.stack([x for _, x, _ in items]),
            [rgb for rgb, _, _ in items],
            self._vocab,
            [{"preprocess": ms} for _, _, ms in items],
        )

    def infer(self, batch: Batch) -> NetworkOutputs:
        """The network on the whole grid: one pass, or overlapping windows for large inputs."""
        vocab = batch.vocab
        if self.backend.capabilities.preprocess:  # the images as decoded, each answered at its own size
            return self.backend.run(batch.images, vocab.prompt_embeds, vocab.class_embeds)
        if self.window is not None and max(batch.images.shape[2:]) > self.window:
            return self._slide(batch)
        if self.backend.capabilities.image_size is None:
            grid = addressable_grid(self.backend.arch, *batch.grid)
            if grid != batch.grid:
                return self._pad_grid(batch, grid)
        sizes = set(batch.sizes)
        output_size = next(iter(sizes)) if len(sizes) == 1 else None
        return self.backend.run(batch.images, vocab.prompt_embeds, vocab.class_embeds, output_size)

    def postprocess(
        self, batch: Batch, outputs: NetworkOutputs, probs_transform: Optional[ProbsTransform] = None
    ) -> List[SegmentationResult]:
        """Softmax, kNN smoothing (in the graph when it computes exactly these settings),
        ``probs_transform``, bilinear up-sampling to each original size and argmax."""
        if probs_transform is not None and not self.host_postprocess:
            raise IFSegError(
                "the server post-processes the results; host-side smoothing (`probs_transform`) does not apply to it"
            )
        timings = dict(outputs.timings)
        graph_knn = (
            outputs.knn_probs is not None
            and self.knn_iters > 0
            and self.backend.capabilities.knn == (self.knn_k, self.knn_iters)
        )
        if graph_knn:
            probs = scores = outputs.knn_probs
        else:
            t0 = time.perf_counter()
            probs, scores = grid_scores(outputs.logits, outputs.features, self.knn_k, self.knn_iters, self.knn_backend)
            if self.knn_iters > 0:
                timings["knn"] = (time.perf_counter() - t0) * 1e3
        if probs_transform is not None:
            probs = scores = probs_transform(probs, outputs.features)
        graph_labels = (
            outputs.labels is not None
            and probs_transform is None
            and len(set(batch.sizes)) == 1
            and (graph_knn or (self.knn_iters == 0 and self.backend.capabilities.knn is None))
        )
        grid = batch.grid if self.host_postprocess else preprocessed_grid(batch.sizes[0], self.preprocessing)
        n = len(batch.originals)
        results = []
        for j, size in enumerate(batch.sizes):
            t0 = time.perf_counter()
            labels = outputs.labels[j] if graph_labels else upsample_argmax(scores[j : j + 1], grid, size)[0]
            per_image = {k: v / n for k, v in timings.items()}
            if self.host_postprocess:  # a server's answer time covers its pre- and post-processing
                per_image.update(batch.timings[j], upsample=(time.perf_counter() - t0) * 1e3)
            results.append(
                SegmentationResult(
                    labels=host_labels(labels, len(batch.vocab.categories) + 1),  # + 1: room for an 'unknown' index
                    # the class count is explicit: a server asked for labels only answers no scores (N = 0)
                    probs=probs[j].reshape(grid[0], grid[1], probs.shape[-1]).cpu().numpy(),
                    logits=outputs.logits[j].reshape(grid[0], grid[1], outputs.logits.shape[-1]).cpu().numpy(),
                    categories=list(batch.vocab.categories),
                    timings={s: per_image[s] for s in STAGES if s in per_image},
                    image=batch.originals[j],
                )
            )
        return results

    # -- convenience ----------------------------------------------------------------------

    def segment(self, image: ImageInput) -> SegmentationResult:
        """Segment one image: a path, an RGB array, a PIL image or a CHW/HWC tensor (:data:`ImageInput`)."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: Iterable[ImageInput], batch_size: int = 8) -> List[SegmentationResult]:
        """Segment many images; images whose resized shapes agree run as one batch."""
        images = list(images)
        results: List[Optional[SegmentationResult]] = [None] * len(images)
        pending: Dict[Tuple[int, ...], List[Tuple[int, np.ndarray, Tensor, float]]] = {}

        def run(group: List[Tuple[int, np.ndarray, Tensor, float]]) -> None:
            batch = Batch(
                torch.stack([x for _, _, x, _ in group]),
                [rgb for _, rgb, _, _ in group],
                self._vocab,
                [{"preprocess": ms} for _, _, _, ms in group],
            )
            for (i, _, _, _), res in zip(group, self.postprocess(batch, self.infer(batch))):
                results[i] = res

        for i, image in enumerate(images):
            rgb, x, ms = self._prepare(image)
            key = tuple(x.shape)
            pending.setdefault(key, []).append((i, rgb, x, ms))
            if len(pending[key]) == batch_size:
                run(pending.pop(key))
        for group in pending.values():
            run(group)
        return results  # type: ignore[return-value]

    def _prepare(self, image: ImageInput) -> Tuple[np.ndarray, Tensor, float]:
        """``(rgb, model input, milliseconds)`` of one image."""
        t0 = time.perf_counter()
        rgb = as_rgb(image)
        if self.backend.capabilities.preprocess:
            x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())
        elif self._frame_device is not None:
            x = self.preprocessing.on_device(rgb, self._frame_device)
        else:
            x = self.preprocessing(rgb)
        return rgb, x, (time.perf_counter() - t0) * 1e3

    def _pad_grid(self, batch: Batch, grid: Tuple[int, int]) -> NetworkOutputs:
        """A grid too tall for OFA's image position table (:func:`addressable_grid`) runs padded on
        the right with mid-gray (0 after normalisation) to ``grid``; the padding's cells are cut from
        the outputs, so kNN smoothing and up-sampling see the image's cells only."""
        (gh, gw), (_, pw) = batch.grid, grid
        images = F.pad(batch.images, (0, pw * 16 - batch.images.shape[3]))
        out = self.backend.run(images, batch.vocab.prompt_embeds, batch.vocab.class_embeds)
        b = images.shape[0]

        def crop(t: Tensor) -> Tensor:
            return t.reshape(b, gh, pw, -1)[:, :, :gw].reshape(b, gh * gw, -1)

        return NetworkOutputs(crop(out.logits), crop(out.features), timings=out.timings)

    def _slide(self, batch: Batch) -> NetworkOutputs:
        """Sliding-window inference: ``window``-pixel crops on the 16-pixel grid with a stride of
        2/3 window; logits and features of cells seen by several crops are averaged."""
        vocab, images, timings = batch.vocab, batch.images, {}
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
                out = self.backend.run(crop, vocab.prompt_embeds, vocab.class_embeds)
                for k, v in out.timings.items():
                    timings[k] = timings.get(k, 0.0) + v
                lg, ft = out.logits, out.features
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
        return NetworkOutputs(
            (logit_sum / count).reshape(b, gh * gw, -1), (feat_sum / count).reshape(b, gh * gw, -1), timings=timings
        )


def host_labels(labels: Tensor, classes: int) -> np.ndarray:
    """A label map ``(H, W)`` of values below ``classes`` as int64 numpy; from a GPU it travels in the
    smallest integer type that holds them (8x fewer bytes than int64 up to 256 classes), widened here."""
    if labels.device.type != "cpu":
        labels = labels.to(torch.uint8 if classes <= 256 else torch.int16 if classes <= 32768 else torch.int32)
    return labels.cpu().numpy().astype(np.int64, copy=False)


def preprocessed_grid(size: Tuple[int, int], preprocessing: Preprocessing) -> Tuple[int, int]:
    """``(h, w)`` cells of the grid of an image of ``size`` ``(H, W)`` after ``preprocessing``."""
    return grid_size(*resized_shape(*size, preprocessing.short_side, preprocessing.long_side_max))


def segment_each(
    seg: Segmenter, images: Sequence[ImageInput], batch_size: int = 8
) -> List[Union[SegmentationResult, IFSegError]]:
    """``seg.segment_batch(images)`` with each image's own outcome: its result, or the one-line
    :class:`IFSegError` saying why it failed. A batch that fails is run again image by image, so
    one image that cannot be decoded or that the model cannot take never fails the others."""
    try:
        return list(seg.segment_batch(images, batch_size))
    except (IFSegError, MemoryError, RuntimeError) as e:
        if len(images) == 1:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return [
                e if isinstance(e, IFSegError) else IFSegError(f"could not be segmented ({type(e).__name__}: {first})")
            ]
    return [segment_each(seg, [image], 1)[0] for image in images]
