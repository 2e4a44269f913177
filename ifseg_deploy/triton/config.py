"""Triton ``config.pbtxt`` writers: the exported graph as a Triton model (:func:`triton_config`), the
client-facing model of a repository (:func:`triton_host_config`), and the templates of the
repository's top-level ``export/`` folder, regenerated with ``python -m ifseg_deploy.triton.config export/``.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence

from ..exporter.tensorrt.profiles import BUILTIN, EMBED_DIM_VAR, TargetProfile, profile_files
from ..fileio import write_bytes
from ..runtime.graph_contract import DTYPES, SYMBOLIC, GraphContract
from .names import CATEGORIES, HOST_MODEL, IMAGE, LABELS, LOGITS, PROBS, RGB


def _pbtxt_string(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_entry(name: str, dtype: str, dims: Sequence, optional: bool = False) -> str:
    shape = ", ".join("-1" if d in SYMBOLIC or d == -1 else str(d) for d in dims)
    return f'  {{ name: "{name}" data_type: TYPE_{dtype} dims: [ {shape} ]{" optional: true" if optional else ""} }}'


def _parameters(parameters: Dict[str, str]) -> List[str]:
    return [
        f"parameters {{ key: {_pbtxt_string(k)} value: {{ string_value: {_pbtxt_string(v)} }} }}"
        for k, v in parameters.items()
    ]


def triton_config(
    profile: TargetProfile,
    platform: str,
    contract: GraphContract,
    name: Optional[str] = None,
    parameters: Optional[Dict[str, str]] = None,
) -> str:
    """A Triton ``config.pbtxt`` for the exported graph: ``tensorrt_plan`` / ``onnxruntime_onnx`` on
    ``profile.triton_instances`` GPU instances, or ``python`` (the graph through ONNX Runtime in a
    Python-backend model, CPU instances). ``max_batch_size`` is 0: ``prompt_embeds`` / ``class_embeds``
    have no batch axis; the client-facing model batches (:func:`triton_host_config`)."""

    def entry(n: str) -> str:
        return _tensor_entry(n, DTYPES.get(n, "float32").replace("float", "FP").upper(), dims[n])

    dims = contract.dims()
    head = 'backend: "python"' if platform == "python" else f'platform: "{platform}"'
    lines = [f'name: "{name or "ifseg_" + profile.name.replace("-", "_")}"', head, "max_batch_size: 0", "input ["]
    lines += [",\n".join(entry(n) for n in contract.input_names), "]", "output ["]
    lines += [",\n".join(entry(n) for n in contract.output_names), "]"]
    lines += [
        f"instance_group [ {{ count: {profile.triton_instances} kind: "
        f"{'KIND_CPU' if platform == 'python' else 'KIND_GPU'} }} ]"
    ]
    if platform == "onnxruntime_onnx" and profile.precision != "fp32":
        lines += [
            "optimization { execution_accelerators { gpu_execution_accelerator: [",
            f'  {{ name: "tensorrt" parameters {{ key: "precision_mode" value: "{profile.precision.upper()}" }}'
            f' parameters {{ key: "max_workspace_size_bytes" value: "{profile.workspace_mb << 20}" }} }}',
            "] } }",
        ]
    lines += _parameters(parameters or {})
    return "\n".join(lines) + "\n"


def triton_host_config(profile: TargetProfile, max_queue_delay_us: int, parameters: Dict[str, str]) -> str:
    """``config.pbtxt`` of the client-facing Python model ``ifseg`` (see :mod:`ifseg_deploy.triton.names`):
    ``max_batch_size`` = the profile's largest batch, dynamic batching that waits up to
    ``max_queue_delay_us`` microseconds for more requests, ``profile.triton_instances`` CPU instances."""
    inputs = [
        _tensor_entry(IMAGE, "STRING", [1], True),
        _tensor_entry(RGB, "UINT8", [-1, -1, 3], True),
        _tensor_entry(CATEGORIES, "STRING", [1], True),
    ]
    outputs = [
        _tensor_entry(LABELS, "INT32", [-1, -1]),
        _tensor_entry(PROBS, "FP32", [-1, -1, -1]),
        _tensor_entry(LOGITS, "FP32", [-1, -1, -1]),
    ]
    lines = [
        f'name: "{HOST_MODEL}"',
        'backend: "python"',
        f"max_batch_size: {profile.batch[2]}",
        "input [",
        ",\n".join(inputs),
        "]",
        "output [",
        ",\n".join(outputs),
        "]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}",
        f"instance_group [ {{ count: {profile.triton_instances} kind: KIND_CPU }} ]",
    ]
    return "\n".join(lines + _parameters(parameters)) + "\n"


def target_files(profile: TargetProfile) -> Dict[str, str]:
    """The files of ``export/`` for one profile: ``{relative path: text}``."""
    template = GraphContract(EMBED_DIM_VAR)
    return {
        **profile_files(profile),
        f"{profile.name}/config.pbtxt": triton_config(profile, "tensorrt_plan", template),
        f"{profile.name}/config.onnx.pbtxt": triton_config(profile, "onnxruntime_onnx", template),
    }


def write_target_files(folder: str) -> List[str]:
    """(Re)generate ``folder`` from the built-in profiles; returns the written paths."""
    written = []
    for profile in BUILTIN.values():
        for rel, text in target_files(profile).items():
            path = os.path.join(folder, rel)
            write_bytes(path, text.encode())
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_target_files(sys.argv[1] if len(sys.argv) > 1 else "export"):
        print(p)
