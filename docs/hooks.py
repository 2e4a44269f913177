"""mkdocs hooks: the command reference is generated from the CLI's own argparse parsers at build time.

Every sub-command of ``ifseg_deploy.cli.main.build_parser()`` gets a page ``cli/<command>.md`` (usage,
description, one row per option) and an entry under the nav section that lists ``cli/index.md``;
``<!-- commands -->`` in a page becomes the table of all commands. A command added to the CLI appears
here without touching the docs, and a changed flag can never disagree with its reference page.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
INDEX = "cli/index.md"
MARKER = "<!-- commands -->"

#: The guide page that explains each command in prose (a command missing here links to ``<command>.md``).
GUIDES = {
    "info": "checkpoints.md",
    "train": "training.md",
    "segment": "segment.md",
    "stream": "streaming.md",
    "export": "export.md",
    "bench": "benchmarks.md",
    "eval": "evaluation.md",
}


def commands() -> List[Tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every ``ifseg-deploy`` sub-command, sorted by name."""
    if str(ROOT) not in sys.path[:1]:
        sys.path.insert(0, str(ROOT))  # this checkout's package, not another installed copy
    from ifseg_deploy.cli.main import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return sorted((name, helps.get(name, ""), sub) for name, sub in action.choices.items())
    raise RuntimeError("ifseg-deploy has no sub-commands")


def _cell(text: str) -> str:
    """Plain text as one Markdown table cell: HTML and Markdown characters escaped, no line breaks."""
    text = html.escape(" ".join(text.split()), quote=False)
    for char in "|*_[]`":
        text = text.replace(char, "\\" + char)
    return text


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def _default(action: argparse.Action) -> str:
    if action.default in (None, False, argparse.SUPPRESS) or action.required:
        return ""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return ""
    return f"`{action.default}`"


def command_page(name: str, summary: str, parser: argparse.ArgumentParser, guide: str) -> str:
    """The Markdown reference page of one sub-command."""
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=80)
    lines = [f"# ifseg-deploy {name}", "", _cell(summary[:1].upper() + summary[1:]) + ".", ""]
    if guide:
        lines += [f"Explained with examples in [the guide]({guide}).", ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()), ""]
    lines += ["| option | value | default | what it does |", "|---|---|---|---|"]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        flags = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}` (positional)"
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            value = " \\| ".join(f"`{c}`" for c in action.choices)
        elif action.nargs == 0:
            value = ""
        else:
            metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
            value = _cell(metavar if isinstance(metavar, str) else " ".join(metavar))
            if action.nargs in ("*", "+"):
                value += " ..."
        if action.required:
            value += " (required)"
        lines.append(f"| {flags} | {value} | {_default(action)} | {_cell(_help(parser, action))} |")
    lines += ["", "Generated from the command's own argument parser (`ifseg-deploy " + name + " -h`)."]
    return "\n".join(lines) + "\n"


def _guide(name: str, files) -> str:
    page = GUIDES.get(name, f"{name}.md")
    return f"../{page}" if files.get_file_from_path(page) is not None else ""


def _insert_nav(nav, entries: List[Dict[str, str]]) -> bool:
    """Append ``entries`` to the nav list that holds ``cli/index.md``."""
    if isinstance(nav, list):
        if any(item == INDEX or (isinstance(item, dict) and INDEX in item.values()) for item in nav):
            nav.extend(entries)
            return True
        return any(_insert_nav(item, entries) for item in nav)
    if isinstance(nav, dict):
        return any(_insert_nav(value, entries) for value in nav.values())
    return False


def on_config(config):
    entries = [{f"ifseg-deploy {name}": f"cli/{name}.md"} for name, _, _ in commands()]
    if config.nav is not None and not _insert_nav(config.nav, entries):
        raise RuntimeError(f"mkdocs.yml: no nav section lists {INDEX} for the command pages")
    return config


def on_files(files, config):
    from mkdocs.structure.files import File  # mkdocs is only needed while building the site

    for name, summary, parser in commands():
        content = command_page(name, summary, parser, _guide(name, files))
        files.append(File.generated(config, f"cli/{name}.md", content=content))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    prefix = "" if page.file.src_uri.startswith("cli/") else "cli/"
    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| [`ifseg-deploy {n}`]({prefix}{n}.md) | {_cell(s)} |" for n, s, _ in commands()]
    return markdown.replace(MARKER, "\n".join(rows))
