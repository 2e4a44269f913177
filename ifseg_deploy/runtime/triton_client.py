"""A Segmenter-like client of a Triton Inference Server serving a repository written by
``ifseg-deploy export --format triton`` (``segment`` / ``stream`` / ``bench --server``).

``TritonSegmenter("grpc://host:8001")`` (or ``http://host:8000``) sends RGB images (or encoded
files) and the category list to the ``ifseg`` model and returns the same
:class:`~ifseg_deploy.runtime.segmenter.SegmentationResult` as the local Segmenter. Every
failure is a one-line :class:`IFSegError`: server unreachable, model not ready, category list
rejected, no answer within ``timeout`` seconds, connection lost. ``tritonclient`` is imported
only here (``pip install 'ifseg-deploy[triton]'``).
"""

from __future__ import annotations

import time
from typing import Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import numpy as np

from ..errors import IFSegError
from ..model import grid_size
from ..preprocess import Preprocessing, as_rgb, resized_shape
from ..redact import redact_url
from ..text.prompt import parse_categories, validate_categories
from .segmenter import ImageInput, SegmentationResult
from .triton_names import (CATEGORIES, DEFAULT_CATEGORIES, HOST_MODEL, IMAGE, KNN_ITERS, KNN_K, LABELS, LOGITS, LONG_SIDE_MAX, PROBS,
                           REJECTED, RGB, SHORT_SIDE)

DEFAULT_TIMEOUT_S = 60.0
PORTS = {"grpc": 8001, "http": 8000}


def parse_server_url(url: str) -> Tuple[str, str]:
    """``grpc://host:8001`` / ``http://host:8000`` -> ``("grpc", "host:8001")`` (default ports 8001 / 8000)."""
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.scheme not in PORTS or not parsed.hostname or parsed.path not in ("", "/"):
        raise IFSegError(f"--server {redact_url(url)}: expected grpc://HOST:8001 or http://HOST:8000")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return parsed.scheme, f"{host}:{parsed.port or PORTS[parsed.scheme]}"


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise IFSegError("--server needs tritonclient: pip install 'ifseg-deploy[triton]'") from None
    return module


class TritonSegmenter:
    """Segments images on a Triton server; the interface of :class:`Segmenter` that the CLI uses
    (``categories``, ``set_categories``, ``segment``, ``segment_batch``).

    ``raw``: also fetch the grid scores (``probs`` / ``logits`` of the results); without them
    those arrays are ``(h, w, 0)``. Raises :class:`IFSegError` when the server cannot be reached
    within ``timeout`` seconds or its ``model`` is not ready.
    """

    def __init__(self, url: str, categories: Optional[Sequence[str]] = None, timeout: float = DEFAULT_TIMEOUT_S,
                 model: str = HOST_MODEL, raw: bool = True):
        if timeout <= 0:
            raise IFSegError("--timeout must be > 0 seconds")
        # credentials in the URL are never sent (only host:port are) and never shown
        self.url, self.model, self.timeout, self.raw = redact_url(url), model, timeout, raw
        self.protocol, address = parse_server_url(url)
        self._module = _client_module(self.protocol)
        kwargs = {} if self.protocol == "grpc" else {"connection_timeout": timeout, "network_timeout": timeout}
        self._client = self._module.InferenceServerClient(address, **kwargs)
        config = self._call(self._model_config, what="reach")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.knn_k, self.knn_iters = int(params.get(KNN_K, 3)), int(params.get(KNN_ITERS, 25))
        self.max_batch = max(1, int(config.get("max_batch_size", 1)))
        default = Preprocessing()
        self.preprocessing = Preprocessing(int(params.get(SHORT_SIDE, default.short_side)), int(params.get(LONG_SIDE_MAX, default.long_side_max)))
        stored = params.get(DEFAULT_CATEGORIES)
        if not categories and not stored:
            raise IFSegError(f"model '{model}' on {self.url} stores no category list; pass --categories \"a, b, c\"")
        self._categories: List[str] = validate_categories(categories) if categories else parse_categories(stored)

    # -- server state ---------------------------------------------------------------------

    def _model_config(self) -> dict:
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        if not self._client.is_server_live(**kw):
            raise IFSegError(f"the Triton server at {self.url} is not live; check its log")
        if not self._client.is_model_ready(self.model, **kw):
            raise IFSegError(f"model '{self.model}' is not ready on {self.url}; check the server log (is the repository "
                             "written by ifseg-deploy export --format triton, and ifseg-deploy installed for its Python backend?)")
        if self.protocol == "grpc":
            return self._client.get_model_config(self.model, as_json=True, client_timeout=self.timeout)["config"]
        return self._client.get_model_config(self.model)

    def statistics(self) -> Tuple[int, int]:
        """``(inference_count, execution_count)`` of the model since the server started (Triton's
        statistics API): images served and batches the server ran; their ratio is the average batch."""
        kw = {"as_json": True, "client_timeout": self.timeout} if self.protocol == "grpc" else {}
        stats = self._call(lambda: self._client.get_inference_statistics(self.model, **kw), what="query")["model_stats"]
        return sum(int(s.get("inference_count", 0)) for s in stats), sum(int(s.get("execution_count", 0)) for s in stats)

    def _call(self, fn, what: str = "call"):
        """Run a tritonclient call; every failure becomes one line."""
        try:
            return fn()
        except IFSegError:
            raise
        except Exception as e:  # tritonclient, grpc, gevent and socket errors alike
            raise IFSegError(self._explain(e, what)) from None

    def _explain(self, e: Exception, what: str) -> str:
        """One line for a failed call: category list rejected, timeout, unreachable, connection lost, server error."""
        from tritonclient.utils import InferenceServerException

        if isinstance(e, InferenceServerException):
            text, status = e.message() or "", e.status() or ""
        else:
            text, status = str(e), ""
        text = redact_url(" ".join(text.split())) or type(e).__name__
        if REJECTED in text:
            return f"the server rejected the category list: {text.split(REJECTED + ':', 1)[-1].strip()}"
        if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in text or "timed out" in text.lower() or "timeout" in type(e).__name__.lower():
            return f"no answer from the Triton server at {self.url} within --timeout {self.timeout:g} s"
        if what == "reach":
            return f"cannot reach a Triton server at {self.url} ({text[:160]}); start it or fix --server"
        if "UNAVAILABLE" in status or isinstance(e, OSError):
            return f"lost the connection to the Triton server at {self.url} ({text[:160]})"
        return f"the Triton server at {self.url} answered with an error: {text[:200]}"

    # -- Segmenter interface --------------------------------------------------------------

    @property
    def categories(self) -> List[str]:
        """The category list sent with every request (default: the one stored in the model)."""
        return list(self._categories)

    def set_categories(self, categories: Sequence[str]) -> None:
        """Use ``categories`` from the next request on (the server checks them against its vocabulary)."""
        self._categories = validate_categories(categories)

    def segment(self, image: ImageInput) -> SegmentationResult:
        """Segment one image (a path, sent encoded, or an RGB uint8 array)."""
        return self.segment_batch([image])[0]

    def segment_batch(self, images: Iterable[ImageInput], batch_size: int = 8) -> List[SegmentationResult]:
        """Segment many images; consecutive RGB arrays of one shape (or files) go in one request of
        up to ``batch_size`` (at most the model's ``max_batch_size``) images."""
        images = list(images)
        limit = max(1, min(batch_size, self.max_batch))
        results: List[SegmentationResult] = []
        start = 0
        while start < len(images):
            kind = _kind(images[start])
            end = start + 1
            while end < len(images) and end - start < limit and _kind(images[end]) == kind:
                end += 1
            results += self._request(images[start:end])
            start = end
        return results

    def close(self) -> None:
        self._client.close()

    # -- the Segmenter's stages, for pipelines such as ifseg_deploy.stream ---------------

    #: The server post-processes (kNN, up-sampling): a host-side ``probs_transform`` cannot apply.
    host_postprocess = False

    def preprocess(self, images: Sequence[ImageInput]) -> List[np.ndarray]:
        """Decode images to RGB uint8 (the server pre-processes them)."""
        return [as_rgb(image) for image in images]

    def infer(self, batch: List[np.ndarray]) -> List[SegmentationResult]:
        """One request for the decoded images of :meth:`preprocess`."""
        return self.segment_batch(batch)

    def postprocess(self, batch: List[np.ndarray], outputs: List[SegmentationResult], probs_transform=None) -> List[SegmentationResult]:
        """The server's results as they are (``probs_transform`` must be None: see :attr:`host_postprocess`)."""
        if probs_transform is not None:
            raise IFSegError("the server post-processes the results; host-side smoothing (--temporal) does not apply to --server")
        return outputs

    # -- one request ----------------------------------------------------------------------

    def _request(self, images: Sequence[ImageInput]) -> List[SegmentationResult]:
        m = self._module
        if isinstance(images[0], str):
            data = np.array([[_read_bytes(p)] for p in images], dtype=np.object_)
            sizes = None
            tensor = m.InferInput(IMAGE, list(data.shape), "BYTES")
        else:
            data = np.stack([np.ascontiguousarray(x) for x in images])
            if data.dtype != np.uint8 or data.ndim != 4 or data.shape[3] != 3:
                raise IFSegError(f"expected RGB uint8 images of shape (H, W, 3), got {data.dtype} {data.shape[1:]}")
            sizes = data.shape[1:3]
            tensor = m.InferInput(RGB, list(data.shape), "UINT8")
        tensor.set_data_from_numpy(data)
        cats = m.InferInput(CATEGORIES, [len(images), 1], "BYTES")
        cats.set_data_from_numpy(np.array([[", ".join(self._categories).encode()]] * len(images), dtype=np.object_))
        inputs = [tensor, cats]
        names = [LABELS, PROBS, LOGITS] if self.raw else [LABELS]
        outputs = [m.InferRequestedOutput(n) for n in names]
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        t0 = time.perf_counter()
        answer = self._call(lambda: self._client.infer(self.model, inputs, outputs=outputs, **kw))
        ms = (time.perf_counter() - t0) * 1e3 / len(images)
        labels = answer.as_numpy(LABELS).astype(np.int64)
        out = []
        for j in range(len(images)):
            if self.raw:
                probs, logits = answer.as_numpy(PROBS)[j], answer.as_numpy(LOGITS)[j]
            else:
                h, w = sizes or labels.shape[1:3]
                gh, gw = grid_size(*resized_shape(h, w, self.preprocessing.short_side, self.preprocessing.long_side_max))
                probs = logits = np.zeros((gh, gw, 0), np.float32)
            rgb = None if sizes is None else images[j]
            out.append(SegmentationResult(labels[j], probs, logits, self.categories, {"server": ms}, image=rgb))
        return out


def _kind(image: ImageInput) -> Union[str, Tuple[int, ...]]:
    return "file" if isinstance(image, str) else tuple(np.shape(image))


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise IFSegError(f"cannot read image {path} ({e.strerror})") from None
