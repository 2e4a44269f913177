"""What this machine has for ifseg-deploy: Python, OS, PyTorch and its CUDA build, every optional
runtime (version, or the extra that installs it), the CPU's instruction sets, CUDA devices, a
Jetson's L4T release, OpenCV's build, and the models in the download cache.

Only PyTorch is imported up front: the command must run where the optional packages it reports
are missing. Every fact is read, never guessed: versions from the installed distributions' metadata
(``importlib.metadata``; a module's ``__version__`` only where no distribution records it, as
for JetPack's TensorRT), CPU flags from ``/proc/cpuinfo``, the driver from
``/proc/driver/nvidia/version``. Nothing here reads environment variables other than the cache's
location, so a report holds no secrets.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..hub import cache_dir, cached_models
from ..runtime.torch_backend import cpu_flags, cpu_has_bf16, cpu_has_vnni
from ..version import __version__

#: The project's distribution name, whose metadata lists the extras.
DISTRIBUTION = "ifseg-deploy"


@dataclass(frozen=True)
class Package:
    """One optional (or core) package: the name people know, the pip distributions that provide it
    (any one of them), and the module it is imported as."""

    label: str
    distributions: Tuple[str, ...]
    module: str


#: The packages reported, runtimes first. Core dependencies are listed too: a broken install shows.
PACKAGES: Tuple[Package, ...] = (
    Package("numpy", ("numpy",), "numpy"),
    Package("onnx", ("onnx",), "onnx"),
    Package("onnxslim", ("onnxslim",), "onnxslim"),
    Package("onnxconverter-common", ("onnxconverter-common",), "onnxconverter_common"),
    Package(
        "onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"), "onnxruntime"
    ),
    Package("openvino", ("openvino",), "openvino"),
    Package("nncf", ("nncf",), "nncf"),
    Package("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"), "tensorrt"),
    Package("tritonclient", ("tritonclient",), "tritonclient"),
    Package("nvidia-pytriton", ("nvidia-pytriton",), "pytriton"),
    Package("faiss", ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss-gpu-cu11"), "faiss"),
    Package(
        "opencv",
        ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
        "cv2",
    ),
    Package("av (PyAV)", ("av",), "av"),
    Package("pillow", ("pillow",), "PIL"),
    Package("tokenizers", ("tokenizers",), "tokenizers"),
    Package("safetensors", ("safetensors",), "safetensors"),
    Package("cyclonedds", ("cyclonedds",), "cyclonedds"),
    Package("rosbags", ("rosbags",), "rosbags"),
    Package("mcap", ("mcap",), "mcap"),
    Package("mcap-ros2-support", ("mcap-ros2-support",), "mcap_ros2"),
    Package("foxglove", ("foxglove-sdk",), "foxglove"),
    Package("aiohttp", ("aiohttp",), "aiohttp"),
    Package("matplotlib", ("matplotlib",), "matplotlib"),
)

#: x86 ``/proc/cpuinfo`` flags that decide which paths are fast: name there -> name people know.
X86_FLAGS: Dict[str, str] = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX-TILE",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}
#: Arm ``/proc/cpuinfo`` ``Features`` (Jetson, Graviton): NEON, its int8 dot product, bf16 / int8 matrix products.
ARM_FEATURES: Dict[str, str] = {"asimd": "NEON", "asimddp": "DOTPROD", "bf16": "BF16", "i8mm": "I8MM", "sve": "SVE"}

TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"
NVIDIA_DRIVER = "/proc/driver/nvidia/version"


def _normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar`` == ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def extras_of(requires: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Normalized distribution name -> the extras of ifseg-deploy that install it, in pyproject
    order, ``dev`` left out (it is for the project's own tests). ``requires``: the ``Requires-Dist``
    lines (default: the installed ifseg-deploy's metadata; empty when it is not installed)."""
    if requires is None:
        try:
            requires = importlib.metadata.requires(DISTRIBUTION) or []
        except importlib.metadata.PackageNotFoundError:
            requires = []
    extras: Dict[str, List[str]] = {}
    for line in requires:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if name and extra and extra.group(1) != "dev":
            extras.setdefault(_normalize(name.group(1)), []).append(extra.group(1))
    return extras


#: On a Jetson, what provides the packages NVIDIA builds for JetPack (pyproject's ``jetson`` extra leaves them out).
JETPACK = {
    "tensorrt": "comes with JetPack (its python3-libnvinfer package)",
    "onnxruntime": "install NVIDIA's onnxruntime-gpu wheel for your JetPack release",
}


def install_hint(package: Package, extras: Dict[str, List[str]], jetson: bool = False) -> str:
    """The command that installs ``package``: ``pip install "ifseg-deploy[cpu]"`` (other extras that
    also provide it in brackets after), or plain ``pip install <distribution>`` when no extra does.
    On a Jetson (``jetson``), the ``jetson`` extra first, and :data:`JETPACK` for NVIDIA's own builds."""
    if jetson and package.label in JETPACK:
        return JETPACK[package.label]
    found: List[str] = []
    for dist in package.distributions:
        found += [e for e in extras.get(_normalize(dist), []) if e not in found]
    if jetson and "jetson" in found:
        found.insert(0, found.pop(found.index("jetson")))
    if not found:
        return f"pip install {package.distributions[0]}"
    others = "".join(f" or [{e}]" for e in found[1:])
    return f'pip install "{DISTRIBUTION}[{found[0]}]"' + (f" ({others.strip()})" if others else "")


def module_install_hint(module: str) -> str:
    """The command that installs the package of the (dotted) ``module`` name a ``ModuleNotFoundError``
    gives, e.g. ``onnx.helper`` -> ``pip install "ifseg-deploy[cpu]" (or [gpu] or [jetson])``;
    ``pip install <top-level name>`` for a module outside :data:`PACKAGES`."""
    top = module.split(".")[0]
    for package in PACKAGES:
        if package.module == top:
            return install_hint(package, extras_of())
    return f"pip install {top}"


def installed(package: Package) -> Optional[Tuple[str, str]]:
    """``(distribution, version)`` of the installed ``package``, None when it is not installed.

    The distribution's metadata gives the version; a module with no metadata (TensorRT from
    JetPack's apt packages, OpenCV built from source) gives its ``__version__`` with distribution ``""``.
    """
    for dist in package.distributions:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec(package.module) is None:
        return None
    try:
        module = importlib.import_module(package.module)
    except Exception:  # found but broken (a missing shared library): reported as not installed
        return None
    return "", str(getattr(module, "__version__", "unknown version"))


def one_line(e: BaseException) -> str:
    """``e`` as ``"Type: first line of its message"`` (at most 200 characters of it), for a report row."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def onnxruntime_providers() -> List[str]:
    """The execution providers of the installed onnxruntime build."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def openvino_devices() -> List[str]:
    """OpenVINO's devices as ``"CPU (Intel(R) Core(TM) Ultra 7 155H)"``."""
    from ..runtime import openvino_core

    core = openvino_core.core()
    return [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]


def opencv_build() -> Dict[str, str]:
    """OpenCV's GUI backend, GStreamer and FFmpeg support, from ``cv2.getBuildInformation()``
    (e.g. ``{"GUI": "NONE", "GStreamer": "NO", "FFmpeg": "YES"}``: the headless wheel)."""
    import cv2

    info = cv2.getBuildInformation()
    found = {}
    for key, label in (("GUI", "GUI"), ("GStreamer", "GStreamer"), ("FFMPEG", "FFmpeg")):
        m = re.search(rf"^\s*{key}:\s*(.+?)\s*$", info, flags=re.M)
        found[label] = m.group(1) if m else "not listed"
    return found


#: Package label -> what else is worth knowing once it is installed.
DETAILS = {"onnxruntime": ("providers", onnxruntime_providers), "openvino": ("devices", openvino_devices)}


def package_facts(extras: Optional[Dict[str, List[str]]] = None, jetson: bool = False) -> List[Dict[str, object]]:
    """One dict per :data:`PACKAGES` entry: ``name``, ``installed``, ``version`` and ``distribution``
    (installed) or ``install`` (the command that installs it; ``jetson``: on a Jetson), plus
    ``providers`` / ``devices`` for onnxruntime / OpenVINO (or ``error`` when asking them fails)."""
    extras = extras_of() if extras is None else extras
    rows = []
    for package in PACKAGES:
        found = installed(package)
        row: Dict[str, object] = {"name": package.label, "installed": found is not None}
        if found is None:
            row["install"] = install_hint(package, extras, jetson)
        else:
            row["distribution"], row["version"] = found
            if package.label in DETAILS:
                key, ask = DETAILS[package.label]
                try:
                    row[key] = ask()
                except Exception as e:  # an installed runtime that cannot start: say why, keep going
                    row["error"] = one_line(e)
        rows.append(row)
    return rows


def cpu_facts() -> Dict[str, object]:
    """CPU model, logical cores, PyTorch's threads, the :data:`X86_FLAGS` / :data:`ARM_FEATURES` it
    has and lacks, and whether it multiplies bf16 natively and has an int8 dot product (VNNI; None: unknown)."""
    flags, arm = cpu_flags(), _arm_features()
    if flags:
        table, have = X86_FLAGS, set(flags)
    elif arm is not None:
        table, have = ARM_FEATURES, set(arm)
    else:  # no /proc/cpuinfo (macOS, Windows): unknown, not absent
        table, have = X86_FLAGS, None
    import torch

    return {
        "model": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "flags": {label: None if have is None else name in have for name, label in table.items()},
        "native_bf16": cpu_has_bf16(),
        "int8_dot_product": cpu_has_vnni(),
    }


def _cpuinfo_field(name: str) -> Optional[str]:
    """The first ``name : value`` of ``/proc/cpuinfo`` (Linux), None where there is none."""
    if not os.path.isfile("/proc/cpuinfo"):
        return None
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        return next((line.split(":", 1)[1].strip() for line in fh if line.split(":", 1)[0].strip() == name), None)


def _arm_features() -> Optional[List[str]]:
    """The ``Features`` line of ``/proc/cpuinfo`` (Arm Linux), None elsewhere."""
    features = _cpuinfo_field("Features")
    return None if features is None else features.split()


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().replace("\x00", "").strip()
    except OSError:
        return None


def nvidia_driver() -> Optional[str]:
    """The NVIDIA kernel driver's version (``"550.54.14"``) from ``/proc/driver/nvidia/version``; None without one."""
    text = _read(NVIDIA_DRIVER)
    m = re.search(r"Kernel Module(?: for \S+)?\s+([\d.]+)", text or "")
    return m.group(1) if m else None


def jetson_facts() -> Optional[Dict[str, str]]:
    """A Jetson's board (``/proc/device-tree/model``) and L4T release (``/etc/nv_tegra_release``,
    ``"# R36 (release), REVISION: 4.0, ..."`` -> ``"R36.4.0"``; JetPack 6.1 ships L4T R36.4); None elsewhere."""
    text = _read(TEGRA_RELEASE)
    if text is None:
        return None
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text)
    return {"board": _read(DEVICE_TREE_MODEL) or "unknown", "l4t": f"R{m.group(1)}.{m.group(2)}" if m else text[:80]}


def torch_facts() -> Dict[str, object]:
    """PyTorch's version, the CUDA it was built with (None: a CPU build), cuDNN, and every CUDA device
    (name, compute capability, memory in GiB), or why there is none (``cuda_unavailable``)."""
    import torch

    facts: Dict[str, object] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "devices": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            facts["devices"].append(
                {
                    "index": i,
                    "name": p.name,
                    "capability": f"{p.major}.{p.minor}",
                    "memory_gib": round(p.total_memory / 2**30, 1),
                }
            )
    else:
        facts["cuda_unavailable"] = cuda_unavailable_reason()
    return facts


def cuda_unavailable_reason() -> Optional[str]:
    """Why PyTorch sees no CUDA device (None when it sees one)."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    return "no CUDA device visible to torch (driver, CUDA_VISIBLE_DEVICES, or no GPU)"


def collect() -> Dict[str, object]:
    """Every fact of this machine, as one JSON-ready dict."""
    jetson = jetson_facts()
    packages = package_facts(jetson=jetson is not None)
    facts: Dict[str, object] = {
        "ifseg_deploy": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()}) {sys.executable}",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "torch": torch_facts(),
        "nvidia_driver": nvidia_driver(),
        "jetson": jetson,
        "cpu": cpu_facts(),
        "packages": packages,
    }
    opencv = next(p for p in packages if p["name"] == "opencv")
    if opencv["installed"]:
        try:
            facts["opencv_build"] = opencv_build()
        except Exception as e:
            facts["opencv_build"] = {"error": one_line(e)}
    facts["cache"] = {
        "folder": cache_dir(),
        "models": [{"name": m.name, "path": m.path, "bytes": m.size, "size": m.size_text} for m in cached_models()],
    }
    return facts
