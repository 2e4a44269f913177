"""The client of a Triton Inference Server serving a repository written by ``ifseg-deploy export
--format triton`` (``segment`` / ``stream`` / ``bench --server``), as one more execution backend.

``connect("grpc://host:8001")`` (or ``http://host:8000``) returns a plain
:class:`~ifseg_deploy.runtime.segmenter.Segmenter` over a :class:`TritonBackend`: the backend
declares that it pre-processes, embeds the category list, smooths with kNN and up-samples itself,
so the Segmenter sends the decoded images with the list's text and passes the server's label maps
through. Every failure is a one-line :class:`IFSegError`: server unreachable, model not ready,
category list rejected, no answer within ``timeout`` seconds, connection lost. ``tritonclient`` is
imported only here (``pip install 'ifseg-deploy[triton]'``).
"""

from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor

from ..errors import IFSegError
from ..preprocess import Preprocessing
from ..redact import redact_url
from ..runtime import graph_contract as graph
from ..runtime.backend import Backend, Capabilities
from ..runtime.segmenter import Segmenter, preprocessed_grid
from ..runtime.vocabulary import PreparedVocabulary
from ..text.prompt import parse_categories, validate_categories
from .names import (
    CATEGORIES,
    DEFAULT_CATEGORIES,
    HOST_MODEL,
    KNN_ITERS,
    KNN_K,
    LABELS,
    LOGITS,
    LONG_SIDE_MAX,
    PROBS,
    REJECTED,
    RGB,
    SHORT_SIDE,
)

DEFAULT_TIMEOUT_S = 60.0
PORTS = {"grpc": 8001, "http": 8000}


def parse_server_url(url: str) -> Tuple[str, str]:
    """``grpc://host:8001`` / ``http://host:8000`` -> ``("grpc", "host:8001")`` (default ports 8001 / 8000)."""
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.scheme not in PORTS or not parsed.hostname or parsed.path not in ("", "/"):
        raise IFSegError(f"url={redact_url(url)}: expected grpc://HOST:8001 or http://HOST:8000")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return parsed.scheme, f"{host}:{parsed.port or PORTS[parsed.scheme]}"


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError:
        raise IFSegError("`url` needs tritonclient: pip install 'ifseg-deploy[triton]'") from None
    return module


class TritonBackend(Backend):
    """The ``model`` of a Triton server as an execution backend of a :class:`Segmenter`.

    :meth:`run` takes the decoded images (uint8 ``(B, 3, H, W)``, one size) and, as its prompt, the
    category list's text (:class:`ServerVocabulary`); it sends them in requests of at most the
    model's ``max_batch_size`` images and returns the label maps at the original size, with the
    kNN-smoothed probabilities and the logits of the grid when ``raw`` (without them, and always
    for the features, ``N = 0`` columns). There is no ``arch``: the server checks shapes itself.
    Raises :class:`IFSegError` when the server cannot be reached within ``timeout`` seconds or its
    ``model`` is not ready.
    """

    name = "triton"

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S, model: str = HOST_MODEL, raw: bool = True):
        if timeout <= 0:
            raise IFSegError(f"timeout={timeout}: must be > 0 seconds")
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
        self.preprocessing = Preprocessing(
            int(params.get(SHORT_SIDE, default.short_side)), int(params.get(LONG_SIDE_MAX, default.long_side_max))
        )
        stored = params.get(DEFAULT_CATEGORIES)
        self.stored_categories: Optional[List[str]] = parse_categories(stored) if stored else None
        self.capabilities = Capabilities(
            device=torch.device("cpu"),
            knn=(self.knn_k, self.knn_iters) if self.knn_iters else None,
            upsample=True,
            stages=("server",),
            preprocess=True,
        )

    # -- server state ---------------------------------------------------------------------

    def _model_config(self) -> dict:
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        if not self._client.is_server_live(**kw):
            raise IFSegError(f"the Triton server at {self.url} is not live; check its log")
        if not self._client.is_model_ready(self.model, **kw):
            raise IFSegError(
                f"model '{self.model}' is not ready on {self.url}; check the server log (is the repository "
                "written by ifseg-deploy export --format triton, and ifseg-deploy installed for its Python backend?)"
            )
        if self.protocol == "grpc":
            return self._client.get_model_config(self.model, as_json=True, client_timeout=self.timeout)["config"]
        return self._client.get_model_config(self.model)

    def statistics(self) -> Tuple[int, int]:
        """``(inference_count, execution_count)`` of the model since the server started (Triton's
        statistics API): images served and batches the server ran; their ratio is the average batch."""
        kw = {"as_json": True, "client_timeout": self.timeout} if self.protocol == "grpc" else {}
        stats = self._call(lambda: self._client.get_inference_statistics(self.model, **kw), what="query")["model_stats"]
        return sum(int(s.get("inference_count", 0)) for s in stats), sum(
            int(s.get("execution_count", 0)) for s in stats
        )

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

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
        if (
            "DEADLINE_EXCEEDED" in status
            or "Deadline Exceeded" in text
            or "timed out" in text.lower()
            or "timeout" in type(e).__name__.lower()
        ):
            return f"no answer from the Triton server at {self.url} within timeout={self.timeout:g} s"
        if what == "reach":
            return f"cannot reach a Triton server at {self.url} ({text[:160]}); start it or fix `url`"
        if "UNAVAILABLE" in status or isinstance(e, OSError):
            return f"lost the connection to the Triton server at {self.url} ({text[:160]})"
        return f"the Triton server at {self.url} answered with an error: {text[:200]}"

    # -- requests -------------------------------------------------------------------------

    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        text = bytes(prompt_embeds.flatten().tolist())
        rgb = images.permute(0, 2, 3, 1).contiguous().numpy()
        parts = [self._request(rgb[i : i + self.max_batch], text, timings) for i in range(0, len(rgb), self.max_batch)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _request(self, rgb: np.ndarray, categories: bytes, timings: Dict[str, float]) -> Dict[str, Tensor]:
        """One request of RGB images ``(b, H, W, 3)``; outputs by graph contract name."""
        m = self._module
        tensor = m.InferInput(RGB, list(rgb.shape), "UINT8")
        tensor.set_data_from_numpy(rgb)
        cats = m.InferInput(CATEGORIES, [len(rgb), 1], "BYTES")
        cats.set_data_from_numpy(np.array([[categories]] * len(rgb), dtype=np.object_))
        inputs = [tensor, cats]
        outputs = [m.InferRequestedOutput(n) for n in ([LABELS, PROBS, LOGITS] if self.raw else [LABELS])]
        kw = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        t0 = time.perf_counter()
        answer = self._call(lambda: self._client.infer(self.model, inputs, outputs=outputs, **kw))
        timings["server"] = timings.get("server", 0.0) + (time.perf_counter() - t0) * 1e3
        if self.raw:  # (b, h, w, N) grid scores -> (b, h*w, N) as a graph answers them
            probs, logits = (torch.from_numpy(np.array(answer.as_numpy(n))).flatten(1, 2) for n in (PROBS, LOGITS))
        else:
            probs = logits = torch.zeros(len(rgb), math.prod(preprocessed_grid(rgb.shape[1:3], self.preprocessing)), 0)
        return {
            graph.LOGITS: logits,
            graph.FEATURES: logits[..., :0],
            graph.KNN_PROBS: probs,
            graph.LABELS: torch.from_numpy(answer.as_numpy(LABELS).astype(np.int64)),
        }


class ServerVocabulary:
    """The category lists of a server, which embeds them itself: a list is checked here as a local
    :class:`~ifseg_deploy.runtime.vocabulary.Vocabulary` checks it, and its prompt is its text
    (``"a, b, c"`` in UTF-8 as ``(1, L, 1)`` uint8), which :class:`TritonBackend` sends.
    ``missing``: the error for no list where the server stores none."""

    def __init__(self, stored: Optional[Sequence[str]], missing: str):
        self.stored_categories = list(stored) if stored else None
        self.class_words: Dict[str, List[str]] = {}  # where Segmenter.set_categories records word lists, refused here
        self.missing = missing

    def prepare(self, categories: Optional[Sequence[str]] = None) -> PreparedVocabulary:
        """The list (default: the server's stored one) with its text as the prompt."""
        if not categories:
            if self.stored_categories is None:
                raise IFSegError(self.missing)
            categories = self.stored_categories
        categories = validate_categories(categories)
        if any(c in self.class_words for c in categories):
            raise IFSegError(
                "a Triton server takes plain category names; classes with word lists (name: words) need a local model"
            )
        text = list(", ".join(categories).encode())
        return PreparedVocabulary(
            categories, text, torch.tensor(text, dtype=torch.uint8).view(1, -1, 1), torch.zeros(len(categories), 0)
        )


def connect(
    url: str,
    categories: Optional[Sequence[str]] = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    model: str = HOST_MODEL,
    raw: bool = True,
) -> Segmenter:
    """A :class:`Segmenter` over the Triton server at ``url`` (:class:`TritonBackend`), with the
    server's kNN settings and preprocessing; ``categories`` default to the list stored in the model.
    ``raw``: also fetch the grid scores (``probs`` / ``logits`` of the results; without them those
    arrays are ``(h, w, 0)``). Raises :class:`IFSegError` with a one-line reason."""
    backend = TritonBackend(url, timeout, model, raw)
    vocab = ServerVocabulary(
        backend.stored_categories,
        f"model '{model}' on {backend.url} stores no category list; pass categories=\"a, b, c\"",
    )
    return Segmenter(
        backend,
        vocab,
        categories,
        knn_k=backend.knn_k,
        knn_iters=backend.knn_iters,  # type: ignore[arg-type]
        preprocessing=backend.preprocessing,
    )
