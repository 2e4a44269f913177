"""The documentation: the site builds with ``mkdocs build --strict`` (every nav page present, every
link and anchor resolving, the API reference generated from the docstrings), the command reference
is generated from the CLI's own parsers, and the README stays a short landing page whose first two
commands are the main job and exactly the command CI runs."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from ifseg_deploy.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"


def load_hooks():
    """docs/hooks.py, the mkdocs build hook that writes the command pages."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(text: str) -> list:
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)]


def ci_command() -> str:
    """The command ``.ci/run`` runs (its one ``python3`` line; before it, only the system packages
    the browser tests need)."""
    lines = [line.strip() for line in CI.read_text(encoding="utf-8").splitlines()]
    commands = [line for line in lines if line.startswith("python3 ")]
    assert len(commands) == 1, f".ci/run should run one command line, found {commands}"
    return commands[0]


def subcommands() -> dict:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_readme_is_a_landing_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move reference text into docs/"


def test_readme_second_block_is_exactly_the_ci_command():
    blocks = code_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "README.md needs the main job and the test command as its first two code blocks"
    assert blocks[1] == ci_command(), "README.md's second code block must be .ci/run's command, character for character"


def test_readme_first_block_installs_and_runs_the_main_job_with_real_flags():
    """Block 1: the install, then train -> export -> stream, each with flags the CLI accepts."""
    first = code_blocks(README.read_text(encoding="utf-8"))[0]
    assert "\n" not in first, "the first block is one command line (copy, paste, run)"
    steps = [shlex.split(step) for step in first.split("&&")]
    assert steps[0][:3] == ["python3", "-m", "pip"], "the first block starts with the install"
    assert "install" in steps[0]
    jobs = [step for step in steps[1:] if step[0] == "ifseg-deploy"]
    assert [job[1] for job in jobs] == ["train", "export", "stream"]
    parser = build_parser()
    for job in jobs:
        try:
            parser.parse_args(job[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {' '.join(job)}")
    trained = parser.parse_args(jobs[0][1:]).out
    assert parser.parse_args(jobs[1][1:]).checkpoint == trained, "export takes what train wrote"


def test_readme_links_point_at_files():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?://)[^)#]+)", text)
    assert links, "README.md links to the documentation"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


DOC_PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")) + ["README.md"]


def command_lines(text: str) -> list:
    """The ``ifseg-deploy ...`` commands of a page's bash blocks (continuations joined, comments cut,
    each command ending at a shell operator: ``&&``, ``;``, ``|``, a redirection); commands elided with
    ``...`` are left out."""
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split, lexer.commenters = True, "#"
            commands, words = [], []
            for word in lexer:
                if set(word) <= set(";&|<>"):  # a shell operator ends the command's words
                    commands.append(words)
                    words = ["(operand)"] if set(word) <= set("<>") else []  # a redirection's target is no word
                else:
                    words.append(word)
            for words in [*commands, words]:
                if words[:1] == ["ifseg-deploy"] and "..." not in words:
                    found.append(words)
    return found


def _own_actions(parser: argparse.ArgumentParser) -> set:
    """The classes of the CLI's own argparse flags that act and exit while parsing, as ``--help`` does,
    sub-commands included (``stream BAG --list-topics`` opens its bag, lists it and exits)."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _own_actions(sub)
        elif type(action).__module__ != "argparse" and action.nargs == 0:
            found.add(type(action))
    return found


def refused_commands(text: str) -> list:
    """The command lines of ``text`` that the CLI's parser refuses: the syntax only, so the CLI's own
    exiting flags exit without their work (a documented bag need not exist here)."""
    parser = build_parser()
    refused = []
    with contextlib.ExitStack() as stack:
        for action in _own_actions(parser):
            stack.enter_context(mock.patch.object(action, "__call__", lambda *args, **kwargs: sys.exit(0)))
        for words in command_lines(text):
            try:
                parser.parse_args(words[1:])
            except SystemExit as e:
                if e.code:
                    refused.append(shlex.join(words))
    return refused


@pytest.mark.parametrize("page", DOC_PAGES)
def test_documented_commands_parse(page):
    """Every command line the documentation shows is accepted by the CLI's parser: a renamed or removed
    flag breaks this test, not the user's copy-paste."""
    refused = refused_commands((ROOT / page).read_text(encoding="utf-8"))
    assert not refused, f"{page}: the CLI refuses " + "; ".join(refused)


def test_command_lines_are_found_and_checked():
    text = (
        "```bash\nifseg-deploy segment a.png \\\n    --checkpoint m.pt  # comment\n"
        "ls && ifseg-deploy x ...\nifseg-deploy segment b.png --checkpoint m.pt --no-such-flag\n"
        'ifseg-deploy checks --json > c.json; echo "status $?" | tee log\n```\n'
        "ifseg-deploy outside a block --is-prose\n"
    )
    assert command_lines(text) == [
        ["ifseg-deploy", "segment", "a.png", "--checkpoint", "m.pt"],
        ["ifseg-deploy", "segment", "b.png", "--checkpoint", "m.pt", "--no-such-flag"],
        ["ifseg-deploy", "checks", "--json"],
    ]
    assert refused_commands(text) == ["ifseg-deploy segment b.png --checkpoint m.pt --no-such-flag"]


def test_command_page_lists_every_option_escaped():
    """The generator behind the command reference: every option with its value, default and help,
    Markdown-special characters escaped so a help text cannot break the table."""
    parser = argparse.ArgumentParser(prog="ifseg-deploy demo", description="Demo command.")
    parser.add_argument("source", help="a <file> or a|b")
    parser.add_argument("--mode", choices=["fast", "exact"], default="exact", help="how (default: %(default)s)")
    parser.add_argument("--n", type=int, default=3, metavar="N", help="count_of *things*")
    parser.add_argument("--flag", action="store_true", help="switch")
    page = load_hooks().command_page("demo", "run a demo", parser, "../demo.md")
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`-h`, `--help`", "`source` (positional)", "`--mode`", "`--n`", "`--flag`"}
    assert "a &lt;file&gt; or a\\|b" in rows["`source` (positional)"]
    assert "`fast` \\| `exact`" in rows["`--mode`"]
    assert "| `exact` |" in rows["`--mode`"]
    assert "how (default: exact)" in rows["`--mode`"]
    assert "count\\_of \\*things\\*" in rows["`--n`"]
    assert "| `3` |" in rows["`--n`"]
    assert all(row.count(" | ") == 3 for row in rows.values()), "every row has four cells"
    assert page.startswith("# ifseg-deploy demo\n")
    assert "[the guide](../demo.md)" in page
    assert "\nRun a demo.\n" in page


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="needs the docs tools: pip install -e '.[docs]'",
)
def test_site_builds_strict_with_a_page_per_command(tmp_path):
    # Without -q: mkdocs -q hides the API reference's docstring warnings (griffe), and hidden warnings do not
    # fail a strict build.
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    for name, parser in subcommands().items():
        page = site / "cli" / name / "index.html"
        assert page.is_file(), f"no reference page for ifseg-deploy {name}"
        html = page.read_text(encoding="utf-8")
        for action in parser._actions:
            for option in action.option_strings:
                assert f"<code>{option}</code>" in html, f"ifseg-deploy {name}: {option} missing from its page"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in (
        "runtime.segmenter.Segmenter.segment",
        "runtime.segmenter.SegmentationResult",
        "stream.pipeline.Stream",
    ):
        assert f'id="ifseg_deploy.{name}"' in api, f"API reference lacks {name}"


USER_PAGES = ("README.md", "docs/quickstart.md", "docs/install.md", "docs/models.md", "docs/checks.md")


def _main_job(page: str) -> list:
    """The shell steps of ``page``'s first bash block (``&&`` chains and lines alike)."""
    block = code_blocks((ROOT / page).read_text(encoding="utf-8"))[0]
    return [step.strip() for line in block.splitlines() for step in line.split("&&") if step.strip()]


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_main_job_streams_a_video_it_wrote(page):
    """A new user has no ``video.mp4``: the video the main job streams is written by an earlier step."""
    steps = _main_job(page)
    stream = next(i for i, step in enumerate(steps) if shlex.split(step)[:2] == ["ifseg-deploy", "stream"])
    source = build_parser().parse_args(shlex.split(steps[stream])[1:]).source
    assert any(source in step for step in steps[:stream]), f"{page}: `stream {source}` reads a file no step writes"


def test_the_main_jobs_sample_clip_is_written(tmp_path):
    """The README's ``python3 -c`` step, run as written: a 40-frame clip that OpenCV reads back."""
    import cv2

    (clip,) = [shlex.split(step) for step in _main_job("README.md") if step.startswith("python3 -c ")]
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, *clip[1:]], cwd=tmp_path, env=env, check=True, timeout=120)
    video = cv2.VideoCapture(str(tmp_path / "runs" / "scene.mp4"))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames == 40
    assert _main_job("docs/quickstart.md")[1:] == [step for step in _main_job("README.md")[1:]], (
        "the quickstart's main job is the README's"
    )


@pytest.mark.parametrize("page", USER_PAGES)
def test_user_pages_use_no_test_fixtures(page):
    """The test suite's fixtures (``../shared/``) are not part of a checkout: a user's page cannot use them."""
    text = (ROOT / page).read_text(encoding="utf-8")
    assert "../shared/" not in text and "fixtures/dev" not in text, f"{page} points at the test fixtures"


def test_install_page_installs_from_the_checkout():
    """ifseg-deploy is installed from its repository: a first install by package name would find nothing
    (or someone else's package) on PyPI."""
    blocks = code_blocks((ROOT / "docs" / "install.md").read_text(encoding="utf-8"))
    by_name = [
        line for block in blocks for line in block.splitlines() if re.search(r"pip install [^#]*ifseg-deploy\[", line)
    ]
    assert not by_name, f"docs/install.md installs by name: {by_name}"
