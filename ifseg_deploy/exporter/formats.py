"""The export formats, in one table (the shape of Ultralytics' ``export_formats()``): name, the
``format`` argument (``--format``), the output's suffix, what it needs, and the function that
writes it (``export_<format>(source, args)``, imported on use like the runtime backends).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Tuple

from ..errors import IFSegError


@dataclass(frozen=True)
class ExportFormat:
    """One row of :data:`EXPORT_FORMATS`."""

    name: str  # for people
    argument: str  # ``format=`` / ``--format``
    suffix: str  # of the default output next to the source: a file ending, or a folder's ``_<format>``
    needs: Tuple[str, ...]  # Python packages it imports
    function: str  # "module:function" of ``export_<format>(source, args) -> ExportResult``
    other_suffixes: Tuple[str, ...] = ()  # further endings ``out`` may have

    @property
    def suffixes(self) -> Tuple[str, ...]:
        return (self.suffix,) + self.other_suffixes

    def default_out(self, source: str) -> str:
        """``models/ofa_tiny.safetensors`` -> ``models/ofa_tiny<suffix>``."""
        return os.path.splitext(source)[0] + self.suffix

    def exporter(self) -> Callable:
        module, function = self.function.split(":")
        return getattr(importlib.import_module(module), function)


EXPORT_FORMATS: Tuple[ExportFormat, ...] = (
    ExportFormat("ONNX", "onnx", ".onnx", ("onnx", "onnxslim", "onnxruntime"), "ifseg_deploy.exporter.api:export_onnx"),
    ExportFormat(
        "TensorRT",
        "engine",
        ".engine",
        ("onnx", "onnxslim", "onnxruntime", "tensorrt"),
        "ifseg_deploy.exporter.api:export_engine",
        (".plan",),
    ),
    ExportFormat(
        "OpenVINO",
        "openvino",
        "_openvino",
        ("onnx", "onnxslim", "onnxruntime", "openvino"),
        "ifseg_deploy.exporter.api:export_openvino",
    ),
)
#: The ``format`` arguments, in table order.
FORMATS: Tuple[str, ...] = tuple(f.argument for f in EXPORT_FORMATS)
#: Endings of a TensorRT engine file.
ENGINE_SUFFIXES: Tuple[str, ...] = next(f.suffixes for f in EXPORT_FORMATS if f.argument == "engine")


def export_format(argument: str) -> ExportFormat:
    """The row of ``format=argument``; :class:`IFSegError` naming the field for an unknown one."""
    for f in EXPORT_FORMATS:
        if f.argument == argument:
            return f
    raise IFSegError(f"format={argument}: use one of {', '.join(FORMATS)}")
