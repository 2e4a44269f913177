"""TensorRT side of the export: profiles, trtexec / Triton files, the static operator check, the
FP32 node list, calibration data, the strongly typed network definition (with a stand-in
``tensorrt`` module), engine compatibility. Engine build/run tests need ``tensorrt`` + CUDA."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.precision.calibrator import calibration_batches, calibration_files, fit_image
from ifseg_deploy.exporter.precision.graph_precision import check_graph_precision, fp32_nodes
from ifseg_deploy.exporter.tensorrt.build import define_network, network_flags
from ifseg_deploy.exporter.tensorrt.ops import check_graph, resolve_target
from ifseg_deploy.exporter.tensorrt.profiles import BUILTIN, TargetProfile, load_profile, trtexec_command
from ifseg_deploy.runtime.graph_contract import GraphContract
from ifseg_deploy.runtime.tensorrt_common import check_engine_compat, version_key
from ifseg_deploy.triton.config import target_files, triton_config

REPO = Path(__file__).resolve().parents[1]


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_trt = pytest.mark.skipif(
    not _has_tensorrt(), reason="needs the tensorrt Python package and a CUDA GPU (not installable here)"
)


# ---------------------------------------------------------------- profiles and generated files


def test_builtin_profiles_and_json_roundtrip(tmp_path):
    assert {"jetson-orin-nano", "jetson-agx-orin", "desktop-rtx", "datacenter"} <= set(BUILTIN)
    p = BUILTIN["jetson-agx-orin"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(dict(p.to_dict(), name="mine", batch=[1, 2, 8])))
    mine = load_profile(str(path))
    assert mine.batch == (1, 2, 8)
    assert mine.workspace_mb == p.workspace_mb
    assert mine.name == "mine"


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ('{"name": "x"}', "missing fields"),
        (json.dumps(dict(BUILTIN["desktop-rtx"].to_dict(), batch=[4, 1, 8])), "min <= opt <= max"),
        (json.dumps(dict(BUILTIN["desktop-rtx"].to_dict(), precision="int4")), "precision"),
        (json.dumps(dict(BUILTIN["desktop-rtx"].to_dict(), speed=1)), "unknown fields"),
    ],
)
def test_bad_profiles(tmp_path, content, match):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(IFSegError, match=match):
        load_profile(str(path))
    with pytest.raises(IFSegError, match="unknown profile"):
        load_profile("jetson-tx1")


def test_image_ranges_scale_with_imgsz():
    p = BUILTIN["jetson-orin-nano"]  # height 512/512/1024, width 512/683/1024 at 512
    assert p.image_range(512) == ((512, 512, 1024), (512, 683, 1024))
    assert p.image_range(384) == ((384, 384, 768), (384, 512, 768))  # 683 * 0.75 = 512.25


def test_trtexec_command():
    p = BUILTIN["jetson-orin-nano"]
    cmd = shlex.split(trtexec_command(p, "m.onnx", "m.engine", 256, timing_cache="t.cache"))
    assert cmd[0] == "trtexec"
    assert "--onnx=m.onnx" in cmd
    assert "--saveEngine=m.engine" in cmd
    assert "--stronglyTyped" in cmd
    assert "--minShapes=images:1x3x512x512,prompt_embeds:1x16x256,class_embeds:1x256" in cmd
    assert "--optShapes=images:1x3x512x683,prompt_embeds:1x40x256,class_embeds:8x256" in cmd
    assert "--maxShapes=images:1x3x1024x1024,prompt_embeds:1x160x256,class_embeds:48x256" in cmd
    assert "--memPoolSize=workspace:1024M" in cmd
    assert "--timingCacheFile=t.cache" in cmd
    # strongly typed: the graph carries the precision, so no weak-typing flags (removed in TensorRT 11)
    for flag in ("--fp16", "--int8", "--best", "--calib", "--precisionConstraints", "--layerPrecisions"):
        assert not any(a.startswith(flag) for a in cmd), flag
    static = shlex.split(trtexec_command(p, "m.onnx", "m.engine", 64, static=(2, 512, 688)))
    assert "--minShapes=images:2x3x512x688,prompt_embeds:1x16x64,class_embeds:1x64" in static
    assert "--maxShapes=images:2x3x512x688,prompt_embeds:1x160x64,class_embeds:48x64" in static


def test_triton_config_names_graph_io():
    text = triton_config(BUILTIN["datacenter"], "tensorrt_plan", GraphContract(256, knn_iters=25))
    for name in ("images", "prompt_embeds", "class_embeds", "logits", "features", "knn_probs"):
        assert f'name: "{name}"' in text
    assert 'platform: "tensorrt_plan"' in text
    assert "count: 2" in text
    assert "dims: [ 1, -1, 256 ]" in text


def test_repository_export_folder_is_up_to_date():
    """export/ is generated from the built-in profiles (python -m ifseg_deploy.triton.config export)."""
    for profile in BUILTIN.values():
        for rel, text in target_files(profile).items():
            path = REPO / "export" / rel
            assert path.is_file(), f"{path} is stale: regenerate export/"
            assert path.read_text() == text, f"{path} is stale: regenerate export/"
        assert load_profile(str(REPO / "export" / "profiles" / f"{profile.name}.json")) == profile


# ---------------------------------------------------------------- static operator check


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def test_resolve_target():
    assert resolve_target("10.3.0.26").version == "10"
    assert resolve_target("8.6.1").version == "8.6"
    assert resolve_target("11.4.0.8").version == "11"
    assert resolve_target("11").version == "11"
    assert resolve_target(None).version == "10"
    assert BUILTIN["desktop-rtx"].tensorrt == "11"
    assert BUILTIN["datacenter"].tensorrt == "11"
    assert BUILTIN["jetson-orin-nano"].tensorrt == "10"
    assert BUILTIN["jetson-agx-orin"].tensorrt == "10"  # JetPack 6
    with pytest.raises(IFSegError, match="no operator table"):
        resolve_target("7.1")


def test_op_check_flags_unsupported_ops_and_restrictions():
    x = _vi("x", [1, 3, 8, 8])
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("Resize", ["x", "", "s"], ["r"], mode="cubic"),
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Slice", ["shp", "st", "en", "shp"], ["sl"]),  # axes from a run-time tensor
        helper.make_node("TopK", ["r", "sl"], ["tv", "ti"], axis=-1),  # K not a constant
        helper.make_node("TopK", ["r", "k"], ["tv2", "ti2"], axis=-1, sorted=0),
        helper.make_node("Unique", ["x"], ["u"]),
        helper.make_node("Foo", ["x"], ["f"], domain="custom"),
    ]
    inits = [
        helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
        k,
        helper.make_tensor("st", TensorProto.INT64, [1], [0]),
        helper.make_tensor("en", TensorProto.INT64, [1], [1]),
    ]
    model = _model(nodes, [x], [_vi("tv", None), _vi("tv2", None), _vi("u", None), _vi("f", None)], inits)
    report = check_graph(model, "10")
    text = " | ".join(report.errors)
    assert not report.ok
    assert "mode cubic unsupported" in text
    assert "`axes` must be an initializer" in text
    assert "`K` must be an initializer" in text
    assert "`sorted` must be 1" in text
    assert "Unique" in text
    assert "custom domain" in text
    assert "Resize" not in " ".join(e for e in report.errors if "not supported" in e)
    assert "opset 21 outside" in " ".join(check_graph(_model([], [x], [x], opset=21), "10").errors)
    assert check_graph(_model([], [x], [x], opset=21), "11").ok  # 11.x parses opsets up to 25
    assert "opset 26 outside" in " ".join(check_graph(_model([], [x], [x], opset=26), "11").errors)
    report11 = check_graph(model, "11")  # same operator support and restrictions as 10 for these nodes
    assert report11.target == "11"
    assert report11.errors == [e.replace("TensorRT 10", "TensorRT 11") for e in report.errors]
    assert "opset 18 outside" in " ".join(check_graph(_model([], [x], [x], opset=18), "8.6").errors)


def test_op_check_accepts_supported_graph_and_reports_types():
    x = _vi("x", [2, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0] * 4)
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0] * 4)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=-1),
        helper.make_node("Softmax", ["y"], ["z"], axis=-1),
    ]
    report = check_graph(_model(nodes, [x], [_vi("z", [2, 4])], [w, b]), "8.6")
    assert report.ok
    assert report.op_counts == {"LayerNormalization": 1, "Softmax": 1}
    cos = _model(
        [helper.make_node("Cos", ["i"], ["o"])], [_vi("i", [2], TensorProto.INT32)], [_vi("o", [2], TensorProto.INT32)]
    )
    assert check_graph(cos, "10").ok
    assert "type INT32 not listed" in check_graph(cos, "10").warnings[0]


# ---------------------------------------------------------------- FP32 nodes of reduced-precision graphs


class _Attention(torch.nn.Module):
    """x -> softmax(x x^T + bias(T)) ; bias depends only on the sequence length."""

    def __init__(self):
        super().__init__()
        self.pos = torch.nn.Linear(1, 4)
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, x):
        t = torch.arange(x.shape[1], dtype=torch.float32)[:, None]
        p = self.pos(t)
        bias = p @ p.t()
        return torch.softmax(x @ x.transpose(1, 2) + bias, -1) @ self.norm(x)


class _Wrapper(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = _Attention()

    def forward(self, images):
        return self.model(images) * 2.0


def test_fp32_nodes(tmp_path):
    path = str(tmp_path / "a.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Wrapper().eval(),
            (torch.randn(1, 5, 4),),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            dynamic_axes={"images": {1: "t"}},
        )
    model = onnx.load(path)
    pinned = set(fp32_nodes(model))
    by_name = {n.name: n for n in model.graph.node}
    ops = {by_name[n].op_type for n in pinned}
    assert {"Softmax", "LayerNormalization", "Add"} <= ops  # Add = q.k^T + bias, right before the softmax
    bias_products = [n for n in pinned if by_name[n].op_type in ("Gemm", "MatMul") and "images" not in by_name[n].input]
    assert bias_products  # the position projection and p p^T of the bias path
    value_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and "images" in n.input]
    assert value_matmuls
    assert not set(value_matmuls) & pinned  # q.k^T itself may run in reduced precision
    assert any(by_name[n].op_type == "Mul" for n in pinned)  # outside /model/: post-processing stays FP32


# ---------------------------------------------------------------- calibration data, precision flags


def test_calibration_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(IFSegError, match="holds no images"):
        calibration_files(str(empty))
    with pytest.raises(IFSegError, match="not a folder"):
        calibration_files(str(tmp_path / "missing"))
    with pytest.raises(IFSegError, match="needs `calib_dir`"):
        calibration_files(None)
    imgs = tmp_path / "calib"
    imgs.mkdir()
    for i, (h, w) in enumerate([(40, 100), (100, 40), (64, 64)]):
        img = np.full((h, w, 3), 40 * (i + 1), np.uint8)
        img[:, w // 2] = 255  # a bright centre column must stay in the centre crop
        cv2.imwrite(str(imgs / f"{i}.png"), img)
    files = calibration_files(str(imgs))
    assert len(files) == 3
    batches = calibration_batches(files, 2, 32, 48)
    assert len(batches) == 2
    assert all(b.shape == (2, 3, 32, 48) and b.dtype == np.float32 for b in batches)
    assert batches[0].min() >= -1.0 and batches[0].max() <= 1.0
    crop = fit_image(cv2.imread(files[0])[..., ::-1].copy(), 32, 48)
    assert crop.shape == (32, 48, 3)
    assert crop[:, 23:25].max() > 200
    assert crop[:, :10].max() < 100


def test_precision_flags():
    check_graph_precision("fp16", None)
    with pytest.raises(IFSegError, match="needs `calib_dir`"):
        check_graph_precision("int8", None)
    with pytest.raises(IFSegError, match=r"`calib_dir` is only used with precision=int8"):
        check_graph_precision("fp16", "somewhere")
    with pytest.raises(IFSegError, match=r"precision='bf16': use one of fp32, fp16, int8 \(exported graphs\)"):
        check_graph_precision("bf16", None)


# ---------------------------------------------------------------- strongly typed network (stand-in tensorrt)

#: The real TensorRT Python API the stand-in is held to: the type stubs of TensorRT 10 (the
#: ``tensorrt-stubs`` package, class by class) and the names in TensorRT 11's bindings library
#: (``tensorrt-cu12-bindings``, 1.3 MB: ``tensorrt.so`` holds every attribute name).
TRT_API_WHEELS = ("tensorrt-stubs==10.13.0.35.1", "tensorrt-cu12-bindings==11.4.0.106")
#: Which stub class each object the builder creates is (by the call that made it).
TRT_CLASSES = {
    "builder": "Builder",
    "create_network": "INetworkDefinition",
    "create_builder_config": "IBuilderConfig",
    "create_optimization_profile": "IOptimizationProfile",
    "create_timing_cache": "ITimingCache",
    "parser": "OnnxParser",
}


@pytest.fixture(scope="module")
def trt_api():
    """``(TensorRT 10 members per class, TensorRT 11 names)``, from the two wheels (downloaded once into
    the user cache; the wheels are only read, never installed: the stubs would make ``import tensorrt`` succeed)."""
    import re
    import subprocess
    import sys
    import zipfile

    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ifseg-deploy" / "tensorrt-api"
    wheels = {w.split("==")[0].replace("-", "_"): w for w in TRT_API_WHEELS}
    found = {k: next(iter(folder.glob(f"{k}-*.whl")), None) for k in wheels}
    if not all(found.values()):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), *TRT_API_WHEELS],
            capture_output=True,
            text=True,
        )
        found = {k: next(iter(folder.glob(f"{k}-*.whl")), None) for k in wheels}
        if not all(found.values()):
            pytest.skip(
                f"cannot download {', '.join(TRT_API_WHEELS)} to check TensorRT API names "
                f"({done.stderr.strip()[-200:]})"
            )
    with zipfile.ZipFile(found["tensorrt_stubs"]) as z:
        stub = z.read("tensorrt_bindings/tensorrt.pyi").decode()
    members, current = {}, None  # read line by line: the generated stub is not always valid Python
    for line in stub.splitlines():
        top = re.match(r"class (\w+)", line)
        if top:
            current = members.setdefault(top.group(1), set())
        elif current is not None and (member := re.match(r"    (?:def )?(\w+)\s*[(:=]", line)):
            current.add(member.group(1))
    with zipfile.ZipFile(found["tensorrt_cu12_bindings"]) as z:
        library = z.read(next(n for n in z.namelist() if n.endswith("tensorrt.so")))
    return members, set(re.findall(rb"[A-Za-z_][A-Za-z0-9_]{2,}", library))


class _FakeTensorRT:
    """The slice of the ``tensorrt`` module the builder touches; records every call and refuses
    any name the real TensorRT 10 class or TensorRT 11 library does not have (``api``: see
    :func:`trt_api`), so a misspelt call fails.

    ``flag_values`` are the ``NetworkDefinitionCreationFlag`` members this release has (their enum
    values differ per release, so the test picks its own)."""

    def __init__(self, version, flag_values, api, parses=True):
        self.__version__ = version
        self.calls = []
        fake = self
        members, library = api

        def check(kind, name):
            cls = TRT_CLASSES[kind]
            if name not in members[cls] or name.encode() not in library:
                raise AttributeError(f"tensorrt.{cls} has no attribute {name!r} in TensorRT 10 or 11")

        class Recorder:
            def __init__(self, kind):
                object.__setattr__(self, "_kind", kind)

            def __getattr__(self, name):
                check(self._kind, name)
                return lambda *a: fake.calls.append((self._kind, name, a)) or fake._result(self._kind, name)

            def __setattr__(self, name, value):
                check(self._kind, name)
                fake.calls.append((self._kind, "set " + name, value))

        class Parser(Recorder):
            num_errors = 0 if parses else 1

            def parse_from_file(self, path):
                fake.calls.append(("parser", "parse_from_file", (path,)))
                return parses

            def get_error(self, i):
                return "In node 3 (parseGraph): UNSUPPORTED_NODE: Unique\nmore"

        for name in ("num_errors", "parse_from_file", "get_error"):  # the parser's stand-ins, held to the real API too
            check("parser", name)
        for cls, names in (
            ("MemoryPoolType", ("WORKSPACE",)),
            ("Logger", ("WARNING",)),
            ("BuilderFlag", ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS")),
        ):
            assert set(names) <= members[cls], (cls, names)
        assert set(flag_values) <= members["NetworkDefinitionCreationFlag"] | {"EXPLICIT_BATCH"}
        self._recorder = Recorder
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.Builder = lambda logger: Recorder("builder")
        self.OnnxParser = lambda network, logger: Parser("parser")
        self.NetworkDefinitionCreationFlag = type("Flags", (), dict(flag_values))
        self.BuilderFlag = type("BuilderFlag", (), {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 2})
        self.MemoryPoolType = type("Pool", (), {"WORKSPACE": 0})

    def _result(self, kind, name):
        return {
            "create_network": "network",
            "create_builder_config": "config",
            "create_optimization_profile": "profile",
            "create_timing_cache": "cache",
        }.get(name) and self._recorder(name)

    def named(self, name):
        return [c for c in self.calls if c[1] == name]


_SHAPES = {"images": ((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 128, 128))}


@pytest.mark.parametrize(
    "version,flags,bit",
    [
        (
            "10.3.0.26",
            {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
            1,
        ),  # JetPack 6: explicit batch is implied, deprecated
        ("11.4.0.8", {"STRONGLY_TYPED": 0}, 0),
        ("11.4.0.8", {"STRONGLY_TYPED": 4}, 4),  # whatever value the release gives the member
    ],
)
def test_network_is_strongly_typed_without_weak_typing_flags(version, flags, bit, trt_api):
    trt = _FakeTensorRT(version, flags, trt_api)
    assert network_flags(trt) == 1 << bit
    profile = BUILTIN["jetson-orin-nano"]
    define_network(trt, "m.onnx", profile, _SHAPES, b"old cache")
    assert trt.named("create_network") == [("builder", "create_network", (1 << bit,))]
    assert trt.named("parse_from_file") == [("parser", "parse_from_file", ("m.onnx",))]
    assert trt.named("set_memory_pool_limit") == [("create_builder_config", "set_memory_pool_limit", (0, 1024 << 20))]
    assert trt.named("set_shape") == [("create_optimization_profile", "set_shape", ("images",) + _SHAPES["images"])]
    assert trt.named("create_timing_cache") == [("create_builder_config", "create_timing_cache", (b"old cache",))]
    assert ("create_builder_config", "set builder_optimization_level", 3) in trt.calls
    # precision comes from the graph: no FP16/INT8 flags, no calibrator, no per-layer precision
    touched = {c[1] for c in trt.calls}
    assert not touched & {
        "set_flag",
        "set int8_calibrator",
        "set_calibration_profile",
        "set precision",
        "set_output_type",
    }


@pytest.mark.parametrize(
    "version,flags",
    [("8.6.1", {"EXPLICIT_BATCH": 0}), ("10.0.0", {"EXPLICIT_BATCH": 0}), ("9.x", {"STRONGLY_TYPED": 1})],
)
def test_network_flags_refuse_tensorrt_without_strong_typing(version, flags, trt_api):
    with pytest.raises(IFSegError, match=r"cannot build strongly typed networks; install TensorRT 10 or 11") as e:
        network_flags(_FakeTensorRT(version, flags, trt_api))
    assert "\n" not in str(e.value)


def test_define_network_reports_parser_error(trt_api):
    trt = _FakeTensorRT("11.4.0", {"STRONGLY_TYPED": 0}, trt_api, parses=False)
    with pytest.raises(IFSegError, match=r"parser rejects m.onnx: In node 3 \(parseGraph\): UNSUPPORTED_NODE: Unique$"):
        define_network(trt, "m.onnx", BUILTIN["desktop-rtx"], _SHAPES)


def test_stand_in_refuses_names_tensorrt_does_not_have(trt_api):
    trt = _FakeTensorRT("11.4.0", {"STRONGLY_TYPED": 0}, trt_api)
    builder = trt.Builder(None)
    with pytest.raises(AttributeError, match="create_netwrok"):
        builder.create_netwrok(0)
    config = builder.create_builder_config()
    with pytest.raises(AttributeError, match="int8_calibrator"):  # TensorRT 10 has it, TensorRT 11 removed it
        config.int8_calibrator = None


def test_tensorrt_module_names_exist_in_both_releases(trt_api):
    """Every ``trt.NAME`` the TensorRT modules use is a TensorRT 10 module member and a TensorRT 11 name."""
    import ast

    members, library = trt_api
    stub_top = set(members)
    root = Path(__file__).resolve().parents[1] / "ifseg_deploy"
    used = set()
    for path in (
        root / "exporter" / "tensorrt" / "build.py",
        root / "runtime" / "tensorrt_backend.py",
        root / "runtime" / "tensorrt_common.py",
    ):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
                used.add(node.attr)
    used.discard("__version__")
    assert {"Builder", "OnnxParser", "Runtime", "Logger"} <= used
    with_enums = (
        stub_top
        | {m for names in members.values() for m in names}
        | {"float32", "float16", "int32", "int8", "int64", "bool"}
    )
    assert used <= with_enums, sorted(used - with_enums)
    assert all(name.encode() in library for name in used), sorted(n for n in used if n.encode() not in library)


# ---------------------------------------------------------------- engine compatibility


def test_engine_compat_messages():
    built = {
        "tensorrt": "10.3.0.26",
        "gpu": "Orin",
        "compute_capability": "8.7",
        "rebuild_command": "ifseg-deploy export --checkpoint m.pt --format engine",
    }
    check_engine_compat(
        built, {"tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7"}, "m.engine"
    )  # build number only
    assert version_key("10.3.0.26") == (10, 3, 0)
    with pytest.raises(IFSegError) as e:
        check_engine_compat(built, {"tensorrt": "10.7.0", "gpu": "Orin", "compute_capability": "8.7"}, "m.engine")
    msg = str(e.value)
    assert "TensorRT 10.3.0.26 (this machine: 10.7.0)" in msg
    assert "rebuild it on this machine with: ifseg-deploy export" in msg
    assert "\n" not in msg
    with pytest.raises(IFSegError, match=r"GPU Orin sm_87 \(this machine: NVIDIA RTX 4090 sm_89\)"):
        check_engine_compat(
            built, {"tensorrt": "10.3.0", "gpu": "NVIDIA RTX 4090", "compute_capability": "8.9"}, "m.engine"
        )


# ---------------------------------------------------------------- real TensorRT (GPU machines only)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, bpe_dir):
    from conftest import make_tiny_model

    from ifseg_deploy.checkpoint import LoadedModel
    from ifseg_deploy.exporter.args import ExportArgs
    from ifseg_deploy.exporter.onnx.writer import write_onnx
    from ifseg_deploy.runtime.vocabulary import Vocabulary
    from ifseg_deploy.text.tokenizer import OFATokenizer

    model = make_tiny_model(5)
    loaded = LoadedModel(model, "bundle", "tiny.safetensors", ["grass", "cat"], None)
    vocab = Vocabulary(OFATokenizer(bpe_dir), model.embed_tokens.weight, loaded.prompt_prefix, None, None)
    out = str(tmp_path_factory.mktemp("trt") / "tiny.onnx")
    write_onnx(
        loaded, out, vocab, ExportArgs(categories=["grass", "cat"], imgsz=64, dynamic=True, position_biases="graph")
    )
    return out, loaded, vocab


@needs_trt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32"])
def test_engine_build_and_run(tiny_onnx, tmp_path, precision):
    from ifseg_deploy.exporter.tensorrt.build import build_engine
    from ifseg_deploy.runtime.sidecar import read_engine_info, vocab_path
    from ifseg_deploy.runtime.tensorrt_backend import TensorRTBackend

    onnx_path, loaded, vocab = tiny_onnx
    profile = TargetProfile(
        "t", "test", precision, 512, (1, 1, 2), (32, 64, 128), (32, 64, 128), (16, 24, 48), (1, 3, 8)
    )
    engine = str(tmp_path / "tiny.engine")
    build = build_engine(onnx_path, engine, profile, 64, device="cuda")
    shutil.copy(vocab_path(onnx_path), vocab_path(engine))
    assert read_engine_info(engine)["precision"] == precision
    assert build.info["compute_capability"]
    backend, _ = TensorRTBackend.open(engine, device="cuda")
    v = vocab.prepare(["grass", "cat", "dog"])
    images = torch.rand(2, 3, 64, 96) * 2 - 1
    logits = backend.run(images, v.prompt_embeds, v.class_embeds).logits
    with torch.inference_mode():
        ref, _ = loaded.model(images, v.prompt_embeds, v.class_embeds)
    tol = 2e-4 if precision == "fp32" else 5e-2
    assert (logits.cpu() - ref).abs().max() < tol
