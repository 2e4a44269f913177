"""Category lists: the ``--categories`` string, categories files and the built-in lists.

One grammar for both forms. Entries are separated by new lines or ``;``; each entry is either
a hierarchical class ``name: word, word, ...`` (one output "name", whose class embedding is
the mean of its words' embeddings and whose artificial training cells draw from its words,
IFSeg paper appendix A.1 / table 15) or one or more flat classes ``name, name, ...`` (each its
own single word). In a file, ``#`` starts a comment and blank lines are skipped::

    # outdoor scene
    grass, sky
    concrete wall
    animal: giraffe, zebra, cat, dog

is the same list as ``--categories "grass, sky; concrete wall; animal: giraffe, zebra, cat, dog"``.
A plain ``--categories "grass, cat, dog"`` is three flat classes, as before.

Names and words are normalised (:func:`~ifseg_deploy.text.normalize.normalize_name`: NFC,
whitespace collapsed); full-width ``，；：`` and the ideographic comma ``、`` count as
separators. Files may be UTF-8 (with or without BOM) or UTF-16/32 with BOM, with any line
endings. A word may belong to several classes (table 15 lists "mirror", "desk" and "door"
under two); the list must follow the rules of :mod:`.vocabulary_rules` (e.g. a class name once,
a word once per class, both ignoring letter case).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..errors import IFSegError
from .normalize import decode_text, normalize_name
from .vocabulary_rules import NO_CATEGORIES, check_class_words, validate_categories

#: Built-in categories files (``ifseg_deploy/data``), by the name ``--categories-file`` accepts.
BUILTIN_FILES = {"coco-stuff-27": "coco_stuff_27.txt"}

#: Full-width / ideographic separators typed by CJK input methods -> ASCII.
SEPARATORS = str.maketrans({"\uff0c": ",", "\u3001": ",", "\uff1b": ";", "\uff1a": ":"})

#: Largest categories file read (a list of words; a bigger file is a wrong path).
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class ClassSpec:
    """One output class: its name (prompt and label) and the words that describe it."""

    name: str
    words: Tuple[str, ...]

    @property
    def hierarchical(self) -> bool:
        """True when the class has its own word list (not just its name)."""
        return self.words != (self.name,)


def flat_classes(names: Sequence[str], training: bool = False) -> List[ClassSpec]:
    """Each name is its own single word (validated and normalised; ``training`` as :func:`check_classes`)."""
    return check_classes([ClassSpec(n, (n,)) for n in validate_categories(names)], training)


def check_classes(classes: Sequence[ClassSpec], training: bool = False) -> List[ClassSpec]:
    """The rules of :mod:`.vocabulary_rules` for a class list: names (``training``: at least two
    classes), and each class's words. A word may belong to several classes.

    Raises:
        IFSegError: the rule's one-line message.
    """
    validate_categories([c.name for c in classes], training)
    for c in classes:
        check_class_words(c.name, c.words)
    return list(classes)


def _names(text: str, where: str, owner: str = "") -> List[str]:
    names = [normalize_name(w) for w in text.split(",")]
    if any(not w for w in names):
        what = f"empty name in the words of '{owner}'" if owner else "empty category name"
        raise IFSegError(f"{where}: {what} (two commas in a row or a trailing comma?); remove it")
    return names


def _entry(entry: str, where: str) -> List[ClassSpec]:
    if entry.count(":") > 1:
        raise IFSegError(
            f"{where}: '{normalize_name(entry)}' has more than one ':'; "
            "write one class per entry as 'name: word, word' and separate classes with ';' or new lines"
        )
    if ":" not in entry:
        return [ClassSpec(n, (n,)) for n in _names(entry, where)]
    name, rest = (normalize_name(part) for part in entry.split(":"))
    if not name:
        raise IFSegError(f"{where}: missing class name before ':'; write 'name: word, word'")
    if not rest:
        raise IFSegError(f"{where}: class '{name}' lists no words after ':'; write 'name: word, word' or just 'name'")
    return [ClassSpec(name, tuple(_names(rest, where, name)))]


def _parse(lines: Sequence[str], where, comments: bool) -> List[ClassSpec]:
    classes: List[ClassSpec] = []
    for i, line in enumerate(lines, 1):
        if comments:
            line = line.split("#", 1)[0]
        for entry in line.translate(SEPARATORS).split(";"):
            if normalize_name(entry.replace(",", "")):  # blank entries (and stray commas alone) are skipped
                classes += _entry(entry, where(i))
    return classes


def parse_category_spec(text: str) -> List[ClassSpec]:
    """Classes of a ``--categories`` string (grammar in the module docstring).

    ``"grass, cat"`` -> ``[ClassSpec("grass", ("grass",)), ClassSpec("cat", ("cat",))]``;
    ``"animal: cat, dog; plant: grass"`` -> ``[ClassSpec("animal", ("cat", "dog")), ClassSpec("plant", ("grass",))]``.

    Raises:
        IFSegError: empty list, empty name, a class without words, two ':' in one entry,
            a duplicate class name or a word twice in one class.
    """
    classes = _parse(str(text).splitlines(), lambda i: "category list", comments=False)
    if not classes:
        raise IFSegError(NO_CATEGORIES)
    return check_classes(classes)


def builtin_file(name: str) -> str:
    """Path of a built-in categories file, e.g. ``builtin_file("coco-stuff-27")`` (IFSeg paper table 15).

    Raises:
        IFSegError: unknown name.
    """
    if name not in BUILTIN_FILES:
        raise IFSegError(f"no built-in categories file '{name}'; choose one of {', '.join(BUILTIN_FILES)}")
    return str(Path(__file__).resolve().parent.parent / "data" / BUILTIN_FILES[name])


def read_categories_file(path: str) -> List[ClassSpec]:
    """Classes of a categories file, or of a built-in list named like ``coco-stuff-27``
    (an existing file of that name wins).

    Raises:
        IFSegError: missing or unreadable file, an encoding other than UTF-8/16/32, no classes,
            or a grammar error (the message gives ``path:line``).
    """
    if not os.path.isfile(path) and path in BUILTIN_FILES:
        path = builtin_file(path)
    if os.path.isdir(path):
        raise IFSegError(f"{path} is a folder; pass a categories text file")
    if not os.path.isfile(path):
        raise IFSegError(f"categories file not found: {path} (built-in lists: {', '.join(BUILTIN_FILES)})")
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise IFSegError(
                f"{path} is over {MAX_FILE_BYTES >> 20} MiB; a categories file is a short text file, check the path"
            )
        with open(path, "rb") as fh:
            text = decode_text(fh.read(), path)
    except OSError as e:
        raise IFSegError(f"cannot read {path} ({e.strerror}); check the path and its permissions") from None
    classes = _parse(text.splitlines(), lambda i: f"{path}:{i}", comments=True)
    if not classes:
        raise IFSegError(f"{path} lists no categories; write one class per line")
    return check_classes(classes)


def parse_categories(text: str) -> List[str]:
    """Flat names of a ``--categories`` string: ``"grass, cat, concrete wall"`` ->
    ``["grass", "cat", "concrete wall"]``.

    Raises:
        IFSegError: anything :func:`parse_category_spec` refuses, and hierarchical classes
            (``name: words``), whose word lists a plain name list cannot carry.
    """
    classes = parse_category_spec(text)
    for c in classes:
        if c.hierarchical:
            raise IFSegError(
                f"class '{c.name}' lists its own words ('{c.name}: {', '.join(c.words)}') where only plain names "
                "are accepted; pass plain names separated by commas"
            )
    return [c.name for c in classes]


def names_and_words(classes: Sequence[ClassSpec]) -> Tuple[List[str], Dict[str, Tuple[str, ...]]]:
    """``(category names, class_words)`` for :class:`~ifseg_deploy.runtime.vocabulary.Vocabulary`:
    ``class_words`` holds only the hierarchical classes (flat ones embed their own name)."""
    return [c.name for c in classes], {c.name: c.words for c in classes if c.hierarchical}
