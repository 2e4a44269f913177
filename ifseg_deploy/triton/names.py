"""Names shared by the Triton model repository (written by ``export --format triton``), the Python
models that run inside the server (:mod:`ifseg_deploy.triton.host`) and the client
(:mod:`ifseg_deploy.triton.client`).

The client-facing model ``ifseg`` (``max_batch_size`` > 0, every tensor has a leading batch axis):
  inputs  ``IMAGE``      BYTES ``[1]``            an encoded image (JPEG, PNG, ...), or
          ``RGB``        UINT8 ``[-1, -1, 3]``    a decoded RGB image;
          ``CATEGORIES`` BYTES ``[1]``            optional, ``"grass, cat, dog"`` (default: the stored list);
  outputs ``LABELS``     INT32 ``[-1, -1]``       class index per pixel at the original size,
          ``PROBS`` / ``LOGITS`` FP32 ``[-1, -1, -1]`` grid scores ``(h, w, N)`` (request them by name).
The network model ``ifseg_network`` has the exported graph's inputs and outputs
(:mod:`ifseg_deploy.runtime.graph_contract`) and ``max_batch_size: 0``.
"""

from __future__ import annotations

HOST_MODEL = "ifseg"
NETWORK_MODEL = "ifseg_network"
IMAGE, RGB, CATEGORIES = "IMAGE", "RGB", "CATEGORIES"
LABELS, PROBS, LOGITS = "LABELS", "PROBS", "LOGITS"
OUTPUTS = (LABELS, PROBS, LOGITS)

#: Files inside a model's version folder ``<model>/1/``.
MODEL_PY = "model.py"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
VOCAB_FILE = "model.vocab.safetensors"
BPE_FOLDER = "bpe"

#: ``config.pbtxt`` parameters the Python models read.
ROLE = "role"  # "host" | "network"
KNN_K, KNN_ITERS, MAX_BATCH = "knn_k", "knn_iters", "max_batch"
SHORT_SIDE, LONG_SIDE_MAX, DEFAULT_CATEGORIES = "short_side", "long_side_max", "categories"
GRAPH_META = "graph_meta"  # JSON: the side file's "arch" and "export" fields (network role)
PROVIDERS = "providers"  # ONNX Runtime providers of the network role, e.g. "cpu"

#: Prefix of the error a request gets when its category list cannot be used.
REJECTED = "category list rejected"
