"""The library names its parameters; the CLI alone turns them into flags.

Rule of the scan: every string literal of ``ifseg_deploy`` outside ``cli/`` is a message (an
f-string's placeholders read as ``{}``), except docstrings, the arguments of ``add_argument`` (a
module's own ``__main__`` parser) and a literal that is one flag token (an argv element such as
``"--no-deps"`` or ``f"--onnx={path}"``). A ``--flag`` in a message is allowed only as part of a
shell command it suggests: after, in the same ``;``-separated clause, one of ``ifseg-deploy
<subcommand>``, ``pip install`` / ``pip uninstall``, ``python -m``, ``torchrun``, ``trtexec``,
``tritonserver`` or ``docker run``. Anything else must name the parameter (``window=100: ...`` or
```window```), which :func:`ifseg_deploy.cli.flags.flag_names` shows as the flag.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import pytest
from conftest import tiny_checkpoint
from PIL import Image
from stream_media import write_avi

import ifseg_deploy
from ifseg_deploy.cli.flags import FLAGS, flag_names
from ifseg_deploy.cli.main import main

PACKAGE = Path(ifseg_deploy.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(
    r"(?<![\w-])(?:ifseg-deploy (?:export|segment|stream|train|eval|bench|info)|pip3? (?:install|uninstall)"
    r"|python3? -m|torchrun|trtexec|tritonserver|docker run)(?![\w-])"
)


def stray_flags(message: str) -> List[str]:
    """The ``--flags`` of ``message`` that are not part of a suggested shell command."""
    stray = []
    for clause in message.split(";"):
        command = COMMAND.search(clause)
        stray += [m.group() for m in FLAG.finditer(clause) if command is None or m.start() < command.start()]
    return stray


def _text(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return node.value
    return "".join(_text(v) if isinstance(v, ast.Constant) else "{}" for v in node.values)  # ast.JoinedStr


def messages(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """``(line, message)`` of ``tree`` (the rule of the module docstring)."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }

    def visit(node: ast.AST) -> Iterator[Tuple[int, str]]:
        if id(node) in docstrings or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
        ):
            return
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            text = _text(node)
            if not re.fullmatch(r"--\S+", text):
                yield node.lineno, text
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_messages_name_parameters(path):
    found = messages(ast.parse(path.read_text(), str(path)))
    bad = [f"{path.name}:{line}: {stray} in {text!r}" for line, text in found if (stray := stray_flags(text))]
    assert not bad, "\n".join(bad)


def test_the_scan_finds_a_flag_and_spares_commands():
    made_up = ast.parse(
        "'''Docs may say --anything.'''\n"
        "NOTE = 'pass --categories'\n"
        "def f(x, p):\n"
        "    raise IFSegError(f'--knn-k {x} is bad; rebuild with ifseg-deploy export --format engine')\n"
        "    checks = [(x > 0, 'pip install --no-deps x; or pass --save')]\n"
        "    p.add_argument('--port', help='like --http-port')\n"
        "    run(['pip', '--quiet', f'--target={x}'])\n"
    )
    assert [stray_flags(text) for _, text in messages(made_up) if stray_flags(text)] == [
        ["--categories"],
        ["--knn-k"],
        ["--save"],
    ]
    assert stray_flags("ifseg-deploy did not write it; choose another --out") == ["--out"]  # a name, not a command


def test_flag_names():
    assert (
        flag_names("window=100: must be a positive multiple of 16 pixels")
        == "--window 100: must be a positive multiple of 16 pixels"
    )
    assert (
        flag_names("`knn_k` must be >= 1 and `knn_iters` >= 0 (got 0, 2)")
        == "--knn-k must be >= 1 and --knn-iters >= 0 (got 0, 2)"
    )
    assert (
        flag_names("url=grpc://h:8001: expected ...; fix `url`") == "--server grpc://h:8001: expected ...; fix --server"
    )
    assert (
        flag_names("precision='fp16' needs network='engine'; gate=False; resume=True")
        == "--precision fp16 needs --network engine; --no-gate; --resume"
    )
    assert flag_names('pass categories="grass, cat, dog"') == 'pass --categories "grass, cat, dog"'
    # not parameters of the table, or not written as a parameter: left alone
    assert (
        flag_names("kNN k=3, /runs/out=1.png, `kind`, the window, ?seed=2")
        == "kNN k=3, /runs/out=1.png, `kind`, the window, ?seed=2"
    )
    assert all(flag.startswith("--") for flag in FLAGS.values())


def _error(capsys, args) -> str:
    assert main(args) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_the_cli_shows_flags(tmp_path, tiny_bundle, bpe_dir, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(image)
    model = ["--checkpoint", tiny_bundle, "--bpe-dir", bpe_dir]
    assert (
        _error(capsys, ["segment", str(image), *model, "--window", "100", "--out", str(tmp_path / "o")])
        == "error: --window 100: must be a positive multiple of 16 pixels"
    )
    video = write_avi(tmp_path / "in.avi", 3)
    assert (
        _error(
            capsys, ["stream", video, *model, "--max-frames", "0", "--save-json", str(tmp_path / "f.jsonl"), "--quiet"]
        )
        == "error: --max-frames 0: must be >= 1"
    )
    folder = tmp_path / "train"
    folder.mkdir()
    assert (
        _error(
            capsys,
            [
                "train",
                "--checkpoint",
                tiny_checkpoint(folder),
                "--categories",
                "grass, cat",
                "--out",
                str(tmp_path / "m.safetensors"),
                "--steps",
                "0",
                "--no-progress",
            ],
        )
        == "error: --steps 0: must be >= 1"
    )
