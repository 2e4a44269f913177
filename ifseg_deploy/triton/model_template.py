"""Triton Python-backend model of a repository written by ``ifseg-deploy export --format triton``.

Copied as ``model.py`` into both Python models of the repository; the ``role`` parameter of the
model's ``config.pbtxt`` picks what it runs:

* ``host`` (model ``ifseg``, the one clients call): :class:`ifseg_deploy.triton.host.HostPipeline`,
  which calls the network model through Triton's BLS API;
* ``network`` (model ``ifseg_network`` on CPU servers): :class:`ifseg_deploy.triton.host.NetworkRunner`.

This file only moves tensors between Triton and ifseg-deploy, which must be installed in the
Python environment of Triton's Python backend stub.
"""

import json
import os
import site
import sys


def _restore_python_path():
    """Some builds of Triton's Python stub (nvidia-pytriton's) start an isolated interpreter that
    ignores ``PYTHONPATH`` and skips site-packages; add them back (``.pth`` files included)."""
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for path in entries:
        site.addsitedir(path)
    sys.path[:0] = entries


_restore_python_path()

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from ifseg_deploy.triton.host import HostItem, HostPipeline, NetworkRunner  # noqa: E402
from ifseg_deploy.triton.names import CATEGORIES, IMAGE, LABELS, LOGITS, NETWORK_MODEL, OUTPUTS, PROBS, RGB, ROLE  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.role = params[ROLE]
        if self.role == "network":
            self.runner = NetworkRunner(folder, params)
            self.inputs = self.runner.contract.input_names
        else:
            self.pipeline = HostPipeline(folder, self._network, params)

    def _network(self, feeds, output_names):
        """The network model through BLS."""
        request = pb_utils.InferenceRequest(
            model_name=NETWORK_MODEL,
            requested_output_names=list(output_names),
            inputs=[pb_utils.Tensor(k, v) for k, v in feeds.items()],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{NETWORK_MODEL}: {response.error().message()}")
        return {k: pb_utils.get_output_tensor_by_name(response, k).as_numpy() for k in output_names}

    def execute(self, requests):
        return self._execute_network(requests) if self.role == "network" else self._execute_host(requests)

    def _execute_network(self, requests):
        responses = []
        for request in requests:
            feeds = {k: pb_utils.get_input_tensor_by_name(request, k).as_numpy() for k in self.inputs}
            try:
                outputs = self.runner.run(feeds)
            except Exception as e:  # one line back to the caller instead of a dead stub
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e).splitlines()[0])))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
        return responses

    def _execute_host(self, requests):
        items, spans, errors = [], [], []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, IMAGE)
            rgb = pb_utils.get_input_tensor_by_name(request, RGB)
            cats = pb_utils.get_input_tensor_by_name(request, CATEGORIES)
            if (image is None) == (rgb is None):
                errors.append(f"send exactly one of {IMAGE} (encoded bytes) and {RGB} (uint8 H x W x 3)")
                spans.append((len(items), len(items)))
                continue
            images = [x[0] for x in image.as_numpy()] if image is not None else list(rgb.as_numpy())
            names = [None] * len(images) if cats is None else [c[0].decode("utf-8", "replace") for c in cats.as_numpy()]
            spans.append((len(items), len(items) + len(images)))
            errors.append(None)
            items += [HostItem(bytes(x) if image is not None else x, c) for x, c in zip(images, names)]
        results = self.pipeline.run(items)
        responses = []
        for request, (start, end), error in zip(requests, spans, errors):
            mine = results[start:end]
            error = error or next((r for r in mine if isinstance(r, str)), None)
            if error is None and len({r.labels.shape for r in mine}) > 1:
                error = "the images of one request must have one size; send them in separate requests"
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error)))
                continue
            wanted = request.requested_output_names() or OUTPUTS
            arrays = {
                LABELS: lambda: np.stack([r.labels for r in mine]).astype(np.int32),
                PROBS: lambda: np.stack([r.probs for r in mine]).astype(np.float32),
                LOGITS: lambda: np.stack([r.logits for r in mine]).astype(np.float32),
            }
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, arrays[k]()) for k in wanted]))
        return responses
