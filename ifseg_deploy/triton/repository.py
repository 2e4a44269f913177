"""``ifseg-deploy export --format triton``: a complete, validated Triton Inference Server model repository.

    REPO/
      README.md                      how to serve and call it (written for this model)
      ifseg_repository.json          what was exported, with which settings
      ifseg/config.pbtxt             the model clients call: Python backend, dynamic batching
      ifseg/1/model.py               -> ifseg_deploy.triton.host.HostPipeline
      ifseg/1/model.vocab.safetensors, ifseg/1/bpe/   token table + BPE files (category list -> embeddings)
      ifseg_network/config.pbtxt     the network: python (ONNX Runtime, CPU servers), onnxruntime_onnx or tensorrt_plan
      ifseg_network/1/model.onnx | model.plan [+ model.py]

Clients send an encoded image (or RGB) and a category list to ``ifseg``; it decodes, pre-processes,
computes the prompt and class embeddings (cached per list), calls ``ifseg_network`` through BLS,
smooths with kNN and up-samples, and answers the label map. The repository is written into a
temporary folder, validated (every ``config.pbtxt`` parses as a Triton ``ModelConfig`` when
tritonclient is installed; the repository's own pipeline run locally gives the same labels as
the :class:`~ifseg_deploy.runtime.segmenter.Segmenter` on the exported graph), then renamed into place.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

from ..errors import IFSegError
from ..exporter.args import IN_GRAPH, ExportArgs
from ..exporter.tensorrt.profiles import load_profile
from ..fileio import atomic_folder, check_output_folder, write_bytes
from ..hub import bpe_folder
from ..runtime.segmenter import Segmenter
from ..runtime.sidecar import read_vocab, vocab_path
from ..text.prompt import parse_categories
from ..text.tokenizer import BPE_FILES
from ..version import __version__
from .config import triton_config, triton_host_config
from .host import HostItem, HostPipeline, NetworkRunner
from .names import (
    BPE_FOLDER,
    DEFAULT_CATEGORIES,
    GRAPH_META,
    HOST_MODEL,
    KNN_ITERS,
    KNN_K,
    LONG_SIDE_MAX,
    MAX_BATCH,
    MODEL_PY,
    NETWORK_MODEL,
    ONNX_FILE,
    PLAN_FILE,
    PROVIDERS,
    ROLE,
    SHORT_SIDE,
    VOCAB_FILE,
)

if TYPE_CHECKING:  # the exporter (and the onnx package) load when a repository is written, not with the CLI
    from ..exporter.api import ExportResult

FORMAT = "triton"
#: ``--network``: how ``ifseg_network`` runs. python: ONNX Runtime inside a Python-backend model
#: (any server, CPU); onnx: Triton's onnxruntime_onnx backend; engine: a TensorRT plan built here.
NETWORKS = ("python", "onnx", "engine")
MANIFEST = "ifseg_repository.json"
MODEL_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_template.py")


@dataclass
class TritonOptions:
    """Settings only a Triton repository has (the ``export --network`` / ``--max-queue-delay-us`` flags)."""

    network: str = "python"
    max_queue_delay_us: int = 2000  # how long the dynamic batcher waits for more requests
    providers: str = "cpu"  # ONNX Runtime providers of the python network model


@dataclass
class TritonExport:
    """What :func:`export_triton` wrote."""

    path: str
    network: str
    export: ExportResult  # the ONNX graph (and engine) the network model serves
    checks: List[str] = field(default_factory=list)  # validation lines for the report


def _resolve(source: str, cfg: ExportArgs, opts: TritonOptions) -> str:
    """The repository folder; checks that need no model."""
    if opts.network not in NETWORKS:
        raise IFSegError(f"unknown network={opts.network!r}; use one of {', '.join(NETWORKS)}")
    if cfg.upsample == IN_GRAPH:
        raise IFSegError(
            "upsample=in-graph does not apply to format='triton': the ifseg model up-samples each image to its own size"
        )
    if opts.max_queue_delay_us < 0:
        raise IFSegError(f"max_queue_delay_us={opts.max_queue_delay_us}: must be >= 0")
    if opts.network != "engine" and cfg.precision not in (None, "fp32"):
        raise IFSegError(f"precision={cfg.precision!r} needs network='engine' (the ONNX graph is fp32)")
    load_profile(cfg.profile)
    out = os.path.abspath(cfg.out or os.path.splitext(source)[0] + "_triton")
    check_output_folder(out, "out", "triton")
    return out


def _network_graph(source: str, cfg: ExportArgs, opts: TritonOptions, build: str) -> ExportResult:
    """The verified ONNX graph (and, for ``engine``, the TensorRT plan) in ``build``."""
    from ..exporter.api import ExportResult, export_model

    onnx_path = os.path.join(build, ONNX_FILE)
    if source.endswith(".onnx"):  # an earlier export: reuse it (its side file says how it was made)
        if read_vocab(source).contract.bias_inputs:
            raise IFSegError(
                f"{source} takes its position biases as inputs, which a Triton network model is not fed; "
                "export from the checkpoint, or from an ONNX exported with position_biases='graph'"
            )
        shutil.copyfile(source, onnx_path)
        shutil.copyfile(vocab_path(source), vocab_path(onnx_path))
        result = ExportResult(onnx_path, files=[onnx_path, vocab_path(onnx_path)])
        if opts.network == "engine":
            result = export_model(
                onnx_path, dataclasses.replace(cfg, format="engine", out=os.path.join(build, PLAN_FILE))
            )
        return result
    fmt = "engine" if opts.network == "engine" else "onnx"
    return export_model(
        source,
        dataclasses.replace(
            cfg,
            format=fmt,
            out=os.path.join(build, PLAN_FILE if fmt == "engine" else ONNX_FILE),
            position_biases="graph",
        ),
    )


def _graph_meta(onnx_path: str) -> str:
    meta = read_vocab(onnx_path).meta
    return json.dumps({"arch": meta["arch"], "export": meta["export"]}, ensure_ascii=False, separators=(",", ":"))


def _write_models(stage: str, build: str, source: str, cfg: ExportArgs, opts: TritonOptions) -> Dict[str, str]:
    """Both models into ``stage``; returns the host model's parameters."""
    profile = load_profile(cfg.profile)
    onnx_path = os.path.join(build, ONNX_FILE)
    host, net = os.path.join(stage, HOST_MODEL, "1"), os.path.join(stage, NETWORK_MODEL, "1")
    os.makedirs(os.path.join(host, BPE_FOLDER))
    os.makedirs(net)
    shutil.copyfile(MODEL_TEMPLATE, os.path.join(host, MODEL_PY))
    shutil.copyfile(vocab_path(onnx_path), os.path.join(host, VOCAB_FILE))
    bpe = bpe_folder(cfg.bpe_dir, source)
    for name in BPE_FILES:  # the server reads only the repository
        shutil.copyfile(os.path.join(bpe, name), os.path.join(host, BPE_FOLDER, name))
    side = read_vocab(onnx_path)
    stored = side.categories or side.export.get("categories") or []
    params = {
        ROLE: "host",
        KNN_K: str(cfg.knn_k),
        KNN_ITERS: str(cfg.knn_iters),
        MAX_BATCH: str(profile.batch[2]),
        DEFAULT_CATEGORIES: ", ".join(stored),
        SHORT_SIDE: str(side.preprocessing.short_side),
        LONG_SIDE_MAX: str(side.preprocessing.long_side_max),
    }
    write_bytes(
        os.path.join(stage, HOST_MODEL, "config.pbtxt"),
        triton_host_config(profile, opts.max_queue_delay_us, params).encode(),
    )
    if opts.network == "engine":
        shutil.copyfile(os.path.join(build, PLAN_FILE), os.path.join(net, PLAN_FILE))
        text = triton_config(profile, "tensorrt_plan", side.contract, NETWORK_MODEL)
    else:
        shutil.copyfile(onnx_path, os.path.join(net, ONNX_FILE))
        if opts.network == "onnx":
            text = triton_config(profile, "onnxruntime_onnx", side.contract, NETWORK_MODEL)
        else:
            shutil.copyfile(MODEL_TEMPLATE, os.path.join(net, MODEL_PY))
            text = triton_config(
                profile,
                "python",
                side.contract,
                NETWORK_MODEL,
                {ROLE: "network", PROVIDERS: opts.providers, GRAPH_META: _graph_meta(onnx_path)},
            )
    write_bytes(os.path.join(stage, NETWORK_MODEL, "config.pbtxt"), text.encode())
    return params


def _check_configs(stage: str) -> Optional[str]:
    """Parse every ``config.pbtxt`` as Triton's ``ModelConfig``; None when tritonclient is absent."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    for model in (HOST_MODEL, NETWORK_MODEL):
        path = os.path.join(stage, model, "config.pbtxt")
        try:
            with open(path, encoding="utf-8") as fh:
                text_format.Parse(fh.read(), model_config_pb2.ModelConfig())
        except text_format.ParseError as e:
            raise IFSegError(
                f"{model}/config.pbtxt does not parse as a Triton ModelConfig ({e}); please report this"
            ) from None
    return f"config.pbtxt of {HOST_MODEL} and {NETWORK_MODEL}: valid Triton ModelConfig"


def _check_pipeline(stage: str, build: str, cfg: ExportArgs, params: Dict[str, str]) -> str:
    """The repository's ``ifseg`` pipeline, run here with the graph on ONNX Runtime, against the Segmenter."""
    from PIL import Image

    onnx_path = os.path.join(build, ONNX_FILE)
    network = NetworkRunner(build, {GRAPH_META: _graph_meta(onnx_path)})
    pipeline = HostPipeline(os.path.join(stage, HOST_MODEL, "1"), lambda feeds, names: network.run(feeds), params)
    local = Segmenter.load(
        onnx_path,
        bpe_dir=os.path.join(stage, HOST_MODEL, "1", BPE_FOLDER),
        device="cpu",
        knn_k=cfg.knn_k,
        knn_iters=cfg.knn_iters,
    )
    from ..exporter.onnx.writer import alternate_categories

    lists = [local.categories, alternate_categories(local.categories)]
    short = local.preprocessing.short_side
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (short, short * 3 // 2, 3), dtype=np.uint8),
        rng.integers(0, 256, (short + 16, short, 3), dtype=np.uint8),
    ]
    for cats in lists:
        local.set_categories(cats)
        for rgb in images:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG")
            got = pipeline.run([HostItem(buf.getvalue(), ", ".join(cats))])[0]
            if isinstance(got, str) or not np.array_equal(got.labels, local.segment(rgb).labels):
                raise IFSegError(
                    f"the repository's pipeline disagrees with the Segmenter on the exported graph "
                    f"({got if isinstance(got, str) else 'labels differ'}); "
                    "the repository was not written, please report this"
                )
    return (
        f"{HOST_MODEL} pipeline (decode, vocabulary, {NETWORK_MODEL}, kNN, up-sampling) vs Segmenter on the graph: "
        f"identical labels, {len(images)} images x {len(lists)} category lists"
    )


def _readme(out: str, cfg: ExportArgs, opts: TritonOptions, params: Dict[str, str], categories: Sequence[str]) -> str:
    name = os.path.basename(out)
    network = {
        "python": "a Python-backend model running the ONNX graph with ONNX Runtime (CPU; any Triton build with the "
        "Python backend)",
        "onnx": "Triton's onnxruntime_onnx backend on the GPU (NVIDIA's Triton containers)",
        "engine": "Triton's tensorrt_plan backend (the plan only loads on the GPU model and TensorRT version it was "
        "built with)",
    }
    return f"""# IFSeg model repository for Triton Inference Server

Written by ifseg-deploy {__version__} \
(`ifseg-deploy export --format triton --network {opts.network} --profile {cfg.profile}`).

| model | what it does |
| --- | --- |
| `{HOST_MODEL}` | the model clients call. Inputs `IMAGE` (encoded JPEG/PNG bytes, BYTES [1]) or `RGB` \
(UINT8 [H, W, 3]) and `CATEGORIES` (BYTES [1], e.g. `"{", ".join(categories)}"`, the default); outputs `LABELS` \
(INT32 [H, W], class index per pixel at the original size), `PROBS` / `LOGITS` (FP32 [h, w, N] grid scores). Python \
backend; dynamic batching up to {params[MAX_BATCH]} images, waiting at most {opts.max_queue_delay_us} us for more \
requests. Computes the prompt and class embeddings of each category list (cached), calls `{NETWORK_MODEL}`, smooths \
with kNN (k={params[KNN_K]}, {params[KNN_ITERS]} iterations) and up-samples. |
| `{NETWORK_MODEL}` | backbone, encoder and decoder: {network[opts.network]}. |

Both Python models run `model.py`, which imports `ifseg_deploy`: install ifseg-deploy \
(`pip install 'ifseg-deploy[cpu]'`) in the Python environment of Triton's Python backend. `{HOST_MODEL}/1/bpe/` holds \
copies of the GPT-2 BPE files of OFA \
(third-party data under their own licence terms; keep them in mind when you redistribute this folder) because the \
server reads only this folder.

## Serve it

In NVIDIA's Triton container (GPU or CPU), with the image from `docker/Dockerfile.triton` of ifseg-deploy:

```bash
docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -v "$PWD/{name}:/models" ifseg-triton \\
    tritonserver --model-repository=/models
```

Locally on Linux without Docker (CPU, the server bundled in the nvidia-pytriton wheel):

```bash
pip install --no-deps nvidia-pytriton
python -m ifseg_deploy.triton.local_server {name} --http-port 8000 --grpc-port 8001
```

The helper runs the wheel's `tritonserver` with the Python backend stub of your Python version and your
Python's libraries (it installs a NumPy 1.x copy for the stub into `~/.cache/ifseg-deploy` once when your
environment has NumPy 2). Any other `tritonserver` works the same way: `tritonserver --model-repository={name}`.

## Call it

```bash
pip install 'ifseg-deploy[triton]'
ifseg-deploy segment photo.jpg --server grpc://localhost:8001 --categories "{", ".join(categories)}"
ifseg-deploy stream video.mp4 --server grpc://localhost:8001 --save out.mp4
ifseg-deploy bench --server grpc://localhost:8001 --clients 4
```
"""


def export_triton(source: str, config: ExportArgs, options: Optional[TritonOptions] = None) -> TritonExport:
    """Write a Triton model repository for ``source`` (checkpoint, bundle or exported ``.onnx``).

    ``config``: the ONNX / engine settings (``out`` is the repository folder, default
    ``<stem>_triton``; ``knn_k`` / ``knn_iters`` are the server's kNN smoothing; ``profile`` gives
    the batch size and instance counts). Raises :class:`IFSegError` with a one-line reason; an
    existing repository is only replaced once the new one is complete and validated.
    """
    opts = options or TritonOptions()
    out = _resolve(source, config, opts)
    with atomic_folder(out, "out", "triton") as stage:
        build = os.path.join(stage, ".build")
        os.makedirs(build)
        result = _network_graph(source, config, opts, build)
        params = _write_models(stage, build, source, config, opts)
        checks = [line for line in (_check_configs(stage), _check_pipeline(stage, build, config, params)) if line]
        categories = parse_categories(params[DEFAULT_CATEGORIES])
        manifest = {
            "format": "ifseg-deploy triton repository",
            "version": __version__,
            "source": os.path.basename(source),
            "network": opts.network,
            "profile": config.profile,
            "categories": categories,
            "parameters": params,
            "max_queue_delay_us": opts.max_queue_delay_us,
        }
        write_bytes(os.path.join(stage, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
        write_bytes(os.path.join(stage, "README.md"), _readme(out, config, opts, params, categories).encode())
        shutil.rmtree(build)
    return TritonExport(out, opts.network, result, checks)
