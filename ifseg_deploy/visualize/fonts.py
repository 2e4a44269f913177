"""Legend text in any script: OpenCV's Hershey font for plain ASCII, TrueType/OpenType otherwise.

OpenCV's Hershey font draws only ASCII (every other character becomes "?"), so category names typed
in Greek, Cyrillic, Chinese, Japanese, ... are drawn with Pillow's FreeType renderer in fonts that
cover them: a font file given by the caller (``font=`` or the ``IFSEG_FONT`` environment variable),
then the fonts fontconfig (``fc-match``) ranks best for the names' characters, one per character
that the fonts before it lack (the fallback a browser does). Characters no installed font covers are
drawn as the font's missing-glyph box, after one warning per distinct set that names them and says
how to fix it.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import unicodedata
from bisect import bisect_right
from typing import FrozenSet, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import IFSegError

log = logging.getLogger(__name__)

#: Environment variable holding the default legend font file (used when ``font`` is not given).
FONT_ENV = "IFSEG_FONT"
HERSHEY = cv2.FONT_HERSHEY_SIMPLEX
#: Seconds a fontconfig query may take before the font lookup gives up (a broken cache rebuilds slowly).
FC_TIMEOUT_S = 20
_FONT_SUFFIXES = ".ttf, .otf, .ttc"

#: One line drawn by a pen: ``(x, baseline_y, text)`` in image pixels.
TextItem = Tuple[int, int, str]


class _Face(NamedTuple):
    path: str
    index: int  # face within a .ttc collection
    chars: FrozenSet[str]  # the characters of the query this face draws (before later faces)


class HersheyPen:
    """OpenCV's Hershey font: ASCII only; kept for ASCII legends, whose look and speed it defines."""

    @staticmethod
    def _style(th: int) -> Tuple[float, int]:
        thick = max(1, round(th / 12))
        return cv2.getFontScaleFromHeight(HERSHEY, th, thick), thick

    def width(self, text: str, th: int) -> int:
        """Advance width in pixels of ``text`` drawn ``th`` pixels high."""
        scale, thick = self._style(th)
        return cv2.getTextSize(text, HERSHEY, scale, thick)[0][0]

    def draw(self, image: np.ndarray, items: Sequence[TextItem], th: int) -> None:
        """Draw each ``(x, baseline_y, text)`` in white, anti-aliased, ``th`` pixels high, into the
        ``(H, W, 3)`` uint8 ``image`` in place."""
        scale, thick = self._style(th)
        for x, y, text in items:
            cv2.putText(image, text, (x, y), HERSHEY, scale, (255, 255, 255), thick, cv2.LINE_AA)


HERSHEY_PEN = HersheyPen()


class TrueTypePen:
    """Pillow FreeType text in a chain of faces: each character in the first face that covers it."""

    def __init__(self, faces: Sequence[_Face]):
        self.faces = tuple(faces)

    def _runs(self, text: str, th: int) -> List[Tuple[ImageFont.FreeTypeFont, str]]:
        """``text`` split into runs of one face; characters no face covers go to the first one."""
        size = _pixel_size(self.faces[0].path, self.faces[0].index, th)
        runs: List[Tuple[ImageFont.FreeTypeFont, str]] = []
        for ch in text:
            face = next((f for f in self.faces if ch in f.chars), self.faces[0])
            font = _font(face.path, face.index, size)
            if runs and runs[-1][0] is font:
                runs[-1] = (font, runs[-1][1] + ch)
            else:
                runs.append((font, ch))
        return runs

    def width(self, text: str, th: int) -> int:
        """Advance width in pixels of ``text`` whose capitals are ``th`` pixels high."""
        return round(sum(font.getlength(run) for font, run in self._runs(text, th)))

    def draw(self, image: np.ndarray, items: Sequence[TextItem], th: int) -> None:
        """Draw each ``(x, baseline_y, text)`` in white, anti-aliased, capitals ``th`` pixels high,
        into the ``(H, W, 3)`` uint8 ``image`` in place."""
        if not items:
            return
        h, w = image.shape[:2]
        # coverage of all lines, composited once; sized to the text (with a text height of margin for
        # descenders and overhangs), not the image, which may be a 24-megapixel photo
        right = max(x + self.width(text, th) for x, _, text in items) + th
        mask = Image.new("L", (min(w, right), min(h, max(y for _, y, _ in items) + th)))
        pen = ImageDraw.Draw(mask)
        for x, y, text in items:
            pos = float(x)
            for font, run in self._runs(text, th):
                pen.text((pos, y), run, fill=255, font=font, anchor="ls")  # "ls": (x, y) on the left baseline
                pos += font.getlength(run)
        box = mask.getbbox()
        if box is None:
            return
        x0, y0, x1, y1 = box
        keep = cv2.cvtColor(cv2.bitwise_not(np.asarray(mask.crop(box))), cv2.COLOR_GRAY2RGB)  # 255 - coverage
        part = image[y0:y1, x0:x1]
        # white over the image by coverage: 255 - (255 - image) * (1 - coverage), in OpenCV's uint8 arithmetic
        part[:] = cv2.bitwise_not(cv2.multiply(cv2.bitwise_not(part), keep, scale=1 / 255))


def resolve_font(font: Optional[str] = None) -> Optional[str]:
    """The legend font file to use: ``font``, else ``$IFSEG_FONT``, else None (look fonts up).

    Loads the file once to check it, so a CLI can fail before any model loads.

    Raises:
        IFSegError: the file does not exist or is not a font FreeType can read (one line, naming
            the path and where it came from).
    """
    source = "font"
    if not font:
        font, source = os.environ.get(FONT_ENV) or None, FONT_ENV
    if font is None:
        return None
    if not os.path.isfile(font):
        raise IFSegError(
            f"{source} {font}: no such font file; pass a TrueType/OpenType file ({_FONT_SUFFIXES}), "
            f"e.g. one listed by `fc-list`"
        )
    try:
        _font(font, 0, 12)
    except OSError as e:
        raise IFSegError(
            f"{source} {font}: cannot read it as a font ({e}); pass a TrueType/OpenType file ({_FONT_SUFFIXES})"
        ) from None
    return font


def legend_pen(names: Sequence[str], font: Optional[str] = None) -> Union[HersheyPen, TrueTypePen]:
    """The pen that draws ``names``: the Hershey font when they are all ASCII and no font file is
    given (see :func:`resolve_font`), else a :class:`TrueTypePen` over the given font and the
    installed fonts fontconfig finds for the names' characters.

    Warns once per distinct set of characters that no font covers (logging, one line); without
    fontconfig or any TrueType font, falls back to the Hershey font (those characters become "?").

    Raises:
        IFSegError: a bad font file (see :func:`resolve_font`).
    """
    path = resolve_font(font)
    if path is None and all(n.isascii() for n in names):
        return HERSHEY_PEN
    text = "".join(names)
    faces, missing, fontconfig = _faces(path, frozenset(text))
    if missing:
        _warn_missing(missing, fontconfig, text)
    return TrueTypePen(faces) if faces else HERSHEY_PEN


@functools.lru_cache(maxsize=64)
def _font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


@functools.lru_cache(maxsize=64)
def _cap_ratio(path: str, index: int) -> float:
    """Height of "H" per pixel of font size (about 0.73 for most Latin fonts)."""
    top, bottom = _font(path, index, 100).getbbox("H", anchor="ls")[1::2]
    return (bottom - top) / 100 if bottom > top else 0.73


def _pixel_size(path: str, index: int, th: int) -> int:
    """Font size whose capitals are ``th`` pixels high, like the Hershey legend's."""
    return max(1, round(th / _cap_ratio(path, index)))


def _parse_charset(text: str) -> Tuple[List[int], List[int]]:
    """fontconfig's ``%{charset}`` ("20-7e a0-2e9 ...", hex) as sorted range starts and ends."""
    starts, ends = [], []
    for part in text.split():
        lo, _, hi = part.partition("-")
        starts.append(int(lo, 16))
        ends.append(int(hi or lo, 16))
    return starts, ends


def _covers(charset: Tuple[List[int], List[int]], chars: Set[str]) -> Set[str]:
    starts, ends = charset
    found = set()
    for ch in chars:
        k = bisect_right(starts, ord(ch)) - 1
        if k >= 0 and ord(ch) <= ends[k]:
            found.add(ch)
    return found


def _fc(args: List[str]) -> Optional[str]:
    """stdout of a fontconfig tool, or None when fontconfig is not installed or fails."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=FC_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=256)
def _faces(path: Optional[str], chars: FrozenSet[str]) -> Tuple[Tuple[_Face, ...], FrozenSet[str], bool]:
    """``(faces, missing, fontconfig)``: the face chain drawing ``chars`` (``path`` first), the
    characters no face covers, and whether fontconfig could be asked. Cached per font and character
    set: one fontconfig call per category list, not per video frame."""
    faces: List[_Face] = []
    left = set(chars)
    if path is not None:
        charset = _fc(["fc-query", "--index", "0", "--format", "%{charset}", path])
        # without fontconfig the given file's coverage is unknown: trust the caller's choice
        covered = _covers(_parse_charset(charset), left) if charset is not None else set(left)
        faces.append(_Face(path, 0, frozenset(covered)))
        left -= covered
    if not left:
        return tuple(faces), frozenset(), True
    # fontconfig ranks charset coverage above the family, so the best-covering fonts come first
    query = "sans-serif:charset=" + " ".join(f"{ord(c):x}" for c in sorted(left))
    listing = _fc(["fc-match", "--sort", "--format", "%{file}\t%{index}\t%{scalable}\t%{charset}\n", query])
    for line in (listing or "").splitlines():
        file, index, scalable, charset = (line.split("\t") + ["", "", ""])[:4]
        if scalable != "True" or not os.path.isfile(file):  # bitmap fonts do not scale with the image
            continue
        covered = _covers(_parse_charset(charset), left)
        if covered or not faces:  # the best match draws uncovered characters as its missing-glyph box, not "?"
            faces.append(_Face(file, int(index or 0), frozenset(covered)))
            left -= covered
            if not left:
                break
    if not faces:  # the Hershey font will draw: only non-ASCII characters are lost
        left = {c for c in left if not c.isascii()}
    return tuple(faces), frozenset(left), listing is not None


_warned: Set[FrozenSet[str]] = set()


def _warn_missing(missing: FrozenSet[str], fontconfig: bool, text: str) -> None:
    if missing in _warned:
        return
    _warned.add(missing)
    chars = sorted(missing, key=text.index)  # as typed
    cjk = any(unicodedata.name(c, "").startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")) for c in chars)
    package = "fonts-noto-cjk" if cjk else "fonts-noto-core"
    why, fix = (
        ("no installed font covers them", "a font covering them")
        if fontconfig
        else ("fontconfig (fc-match), which finds fonts, is not installed", "fontconfig and a font covering them")
    )
    log.warning(
        "legend: cannot draw %s (%s): %s; install %s (e.g. apt install %s) or pass a font file (font=PATH or %s=PATH)",
        "".join(chars),
        " ".join(f"U+{ord(c):04X}" for c in chars),
        why,
        fix,
        package if fontconfig else f"fontconfig {package}",
        FONT_ENV,
    )
