"""Training classes: flat names (``--categories``) or a categories file with optional word hierarchy.

File format (UTF-8), one class per line; ``#`` starts a comment; blank lines are skipped::

    grass
    concrete wall
    animal: giraffe, zebra, cat, dog     # one output "animal", four words drawn in artificial cells

A line without ``:`` may also list several flat classes separated by commas. Every word is a
name as the tokenizer sees it (multi-word names such as "concrete wall" are fine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ..errors import IFSegError
from ..text.prompt import parse_categories, validate_categories


@dataclass(frozen=True)
class ClassSpec:
    """One output class: its name (prompt and label) and the words artificial cells draw from."""

    name: str
    words: Tuple[str, ...]


def flat_classes(names: Sequence[str]) -> List[ClassSpec]:
    """Each name is its own single word."""
    return check_classes([ClassSpec(n, (n,)) for n in validate_categories(names)])


def classes_from_text(text: str) -> List[ClassSpec]:
    """``"grass, cat, concrete wall"`` (the ``--categories`` syntax)."""
    return flat_classes(parse_categories(text))


def check_classes(classes: Sequence[ClassSpec]) -> List[ClassSpec]:
    """Reject empty lists, duplicate class names and a word used twice (case-insensitive)."""
    validate_categories([c.name for c in classes])
    owner: Dict[str, str] = {}
    for c in classes:
        if not c.words:
            raise IFSegError(f"class '{c.name}' lists no words; write 'name: word, word' or just 'name'")
        for w in c.words:
            key = w.lower()
            if key in owner:
                where = "twice in class" if owner[key] == c.name else f"in classes '{owner[key]}' and"
                raise IFSegError(f"word '{w}' appears {where} '{c.name}'; each word may belong to one class only")
            owner[key] = c.name
    return list(classes)


def _words(text: str, line_no: int, path: str) -> List[str]:
    words = [" ".join(w.split()) for w in text.split(",")]
    if any(not w for w in words):
        raise IFSegError(f"{path}:{line_no}: empty name (two commas in a row or a trailing comma?); remove it")
    return words


def parse_categories_file(path: str) -> List[ClassSpec]:
    """Read a categories file (format in the module docstring)."""
    if not os.path.isfile(path):
        raise IFSegError(f"categories file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError:
        raise IFSegError(f"{path} is not UTF-8 text; save the categories file as UTF-8") from None
    except OSError as e:
        raise IFSegError(f"cannot read {path} ({e.strerror})") from None
    classes: List[ClassSpec] = []
    for i, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" in line:
            name, rest = line.split(":", 1)
            name = " ".join(name.split())
            if not name:
                raise IFSegError(f"{path}:{i}: missing class name before ':'")
            words = _words(rest, i, path) if rest.strip() else []
            classes.append(ClassSpec(name, tuple(words)))
        else:
            classes += [ClassSpec(w, (w,)) for w in _words(line, i, path)]
    if not classes:
        raise IFSegError(f"{path} lists no categories; write one class per line")
    return check_classes(classes)
