"""The package's import graph: imports only go down the layers, and no module imports itself
through a cycle. Reads every ``import`` statement (function bodies included) with ``ast``."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "ifseg_deploy"

#: Lowest first. A module may import its own sub-package and anything in a lower layer.
LAYERS = [
    {"errors", "version"},
    {"fileio", "config", "precision", "tracing", "redact"},
    {"model", "preprocess"},
    {"text", "postprocess", "visualize"},
    {"ros"},  # ROS 2 message types and CDR, bags in and out, Foxglove: no model
    {"checkpoint"},
    {"hub"},  # official models by name and the BPE files: downloaded once into the user cache, checked
    {"runtime"},
    {"eval"},
    {"artificial"},  # artificial images and the held-out set (scored with eval's metrics), for train and export
    {"exporter", "stream"},
    {"triton"},  # the Triton repository writer, local server, host model and client backend
    {"ros2node"},  # the ROS 2 node over DDS (runtime + ros)
    {"bench"},  # latency, bench --compare (exports and benchmarks every backend), Triton load
    {"checks"},  # ifseg-deploy checks: the machine's facts and the self-test (through bench --compare)
    {"train", "app"},  # app: the browser front end over stream (and Triton clients through runtime's loader)
    {"cli"},
    {"__init__", "__main__"},  # the front door: Segmenter, Stream, load, export
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: Set[str]) -> Set[str]:
    """Package modules imported by ``path`` (``from .x import y`` resolves to ``x.y`` when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ifseg_deploy"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("ifseg_deploy"):
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_component_has_a_layer():
    assert {component(m) for m in graph()} <= set(RANK), "add new top-level modules to LAYERS"


def test_imports_only_go_down():
    upward = []
    for module, deps in graph().items():
        mine = component(module)
        for dep in deps:
            theirs = component(dep)
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    state: Dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_checker_sees_upward_and_cyclic_imports(tmp_path, monkeypatch):
    """The checks above can fail: a fake package with an upward import and a cycle is caught."""
    pkg = tmp_path / "ifseg_deploy"
    (pkg / "model").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "__init__.py").write_text("from ..cli import main\n")
    (pkg / "model" / "a.py").write_text("from . import b\n")
    (pkg / "model" / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("import ifseg_deploy.model\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    g = graph()
    assert "ifseg_deploy.cli.main" in g["ifseg_deploy.model"]
    assert "ifseg_deploy.model.a" in g["ifseg_deploy.model.b"]
    assert "ifseg_deploy.model.b" in g["ifseg_deploy.model.a"]
    for check in (test_imports_only_go_down, test_no_import_cycles):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} missed a bad import")


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def documented_layers(text: str) -> list:
    """The docs' layer line ("Imports only go down: `errors` ← `fileio`/`config` ← ...") as a list of sets."""
    line = " ".join(text.split("Imports only go down:", 1)[1].split(";", 1)[0].split())
    return [set(re.findall(r"`([\w_]+)`", group)) for group in line.split("←")]


def test_docs_layers_and_package_map_match_the_layers():
    """The architecture page's layer line lists LAYERS exactly (package entry points aside), and its
    package table has a row for every sub-package, so the documentation cannot drift from the checked layering."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    documented = [layer - {"__init__", "__main__"} for layer in LAYERS]
    assert documented_layers(text) == [layer for layer in documented if layer], (
        "update the layer line of docs/architecture.md"
    )
    section = text.split("## Packages", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([\w_]+)/` \|", section, flags=re.M))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= rows, f"docs/architecture.md package rows missing: {sorted(packages - rows)}"
    assert rows <= packages, f"docs/architecture.md rows of packages that do not exist: {sorted(rows - packages)}"


def test_layer_line_parser_sees_a_wrong_order():
    assert documented_layers("Imports only go down: `errors` ← `a`/`b` ← `c`; more") == [{"errors"}, {"a", "b"}, {"c"}]
    assert documented_layers("Imports only go down: `c` ← `errors`;") != [{"errors"}, {"c"}]
