"""ifseg-deploy: image-free semantic segmentation (IFSeg / SegOFA) for edge deployment.

The front door::

    from ifseg_deploy import Segmenter, Stream, export, load

    seg = load("m.safetensors", "grass, cat, dog")  # any model file: .pt, .safetensors, .onnx, .engine, OpenVINO folder
    result = seg.segment("photo.jpg")  # result.labels (H, W), result.plot(), result.save("out", "photo")
    for frame, result in Stream(seg, "video.mp4"):  # files, webcams, rtsp:// URLs, GStreamer pipelines
        ...
    export("m.safetensors", format="onnx", precision="fp16")

PyTorch and the runtimes load when a name is first used, so ``import ifseg_deploy`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from .version import __version__

if TYPE_CHECKING:
    from .runtime.segmenter import Segmenter
    from .stream import Stream

__all__ = ["Segmenter", "Stream", "__version__", "export", "load"]


def load(path: str, categories: Union[str, Sequence[str], None] = None, **options: Any) -> "Segmenter":
    """The :class:`Segmenter` of any model file (:meth:`Segmenter.load`: ``bpe_dir``, ``device``,
    ``precision``, ``knn_k``, ``knn_iters``, ``window``, ... as keywords); ``path`` may be a model name
    (``"ofa-tiny"``, ...: downloaded once into the cache, see ``docs/models.md``); ``categories`` a list
    of names or the CLI's string (``"grass, cat"``, ``"animal: cat, dog; grass"``), None for the stored list.

    Raises:
        IFSegError: the file is missing or unreadable, or an option is out of range (one line).
    """
    from .runtime.segmenter import Segmenter

    return Segmenter.load(path, categories, **options)


def export(source: str, format: str = "onnx", network: Optional[str] = None, **args: Any):
    """Export ``source`` (checkpoint or bundle; an exported ``.onnx`` for engines and Triton) as
    ``ifseg-deploy export`` does: ``format`` is ``onnx``, ``engine``, ``openvino`` or ``triton``;
    ``args`` are :class:`ifseg_deploy.exporter.args.ExportArgs` fields, named as the export flags
    (``out``, ``imgsz``, ``precision``, ``calib_dir``, ``dynamic``, ``knn``, ...); ``network``: the
    Triton network model (``python``, ``onnx`` or ``engine``). Returns the export's result (paths
    written, verification and precision reports).

    Raises:
        IFSegError: a setting is out of range, an output path cannot be written, or the exported
            model disagrees with PyTorch (nothing written).
    """
    from .exporter.api import export_model
    from .exporter.args import ExportArgs

    if format == "triton":
        from .triton.repository import TritonOptions, export_triton

        return export_triton(source, ExportArgs(format=format, **args), TritonOptions(network or "python"))
    if network is not None:
        from .errors import IFSegError

        raise IFSegError(f"network={network} applies to format='triton' only")
    return export_model(source, ExportArgs(format=format, **args))


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from .runtime.segmenter import Segmenter

        return Segmenter
    if name == "Stream":
        from .stream import Stream

        return Stream
    raise AttributeError(f"module 'ifseg_deploy' has no attribute {name!r}")
