"""Text as editors write it: decoding of category files and normalisation of category names.

One normal form for every category name, wherever it comes from (``--categories``, a categories
file, a checkpoint's stored list, the Python API), so that lists compare equal with ``==``
exactly when a user means the same words:

* Unicode NFC (a decomposed "cafe" + U+0301 equals the composed "café");
* invisible format characters that editors and copy-paste leave behind (zero-width space,
  word joiner, byte-order mark, soft hyphen) are removed;
* every run of whitespace (tabs, CR/LF, no-break and other Unicode spaces) becomes one space,
  leading and trailing whitespace is dropped.

Letter case is kept: the tokenizer distinguishes "Cat" from "cat".
"""

from __future__ import annotations

import codecs
import unicodedata

from ..errors import IFSegError

#: Invisible characters removed from names (ZWJ / ZWNJ are kept: some scripts need them).
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad\u180e"))

#: Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def normalize_name(text: str) -> str:
    """The normal form of one category name or word (see the module docstring); may be ``""``."""
    return " ".join(unicodedata.normalize("NFC", str(text)).translate(INVISIBLE).split())


def _utf16_without_bom(data: bytes) -> str:
    """``"utf-16-le"`` / ``"utf-16-be"`` when ``data`` looks like BOM-less UTF-16 of mostly ASCII text."""
    if len(data) < 2 or len(data) % 2:
        return ""
    even, odd = data[0::2].count(0), data[1::2].count(0)
    half = len(data) // 2
    if odd > 0.3 * half and even < odd / 8:  # ASCII letters: "a\0" pairs; a few non-Latin characters allowed
        return "utf-16-le"
    if even > 0.3 * half and odd < even / 8:
        return "utf-16-be"
    return ""


def _checked(text: str, what: str) -> str:
    """``text`` unless it holds control characters other than whitespace (a binary file)."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc" and not ch.isspace():
            line = text.count("\n", 0, i) + 1
            raise IFSegError(
                f"{what} is not a text file (control character U+{ord(ch):04X} on line {line}); pass a categories text "
                f"file"
            )
    return text


def decode_text(data: bytes, what: str) -> str:
    """Text of a file's bytes: UTF-8 (with or without BOM), UTF-16 / UTF-32 with BOM (Windows
    Notepad's "Unicode"), or BOM-less UTF-16 of mostly ASCII text.

    Line endings are left as they are (``str.splitlines`` handles LF, CRLF and CR).

    Raises:
        IFSegError: the bytes are in none of these encodings (e.g. a legacy code page such as
            Windows-1252; the message names the first bad byte and its line), or the text holds
            control characters (a binary file).
    """
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(codec), what)
            except UnicodeDecodeError:
                raise IFSegError(
                    f"{what} starts with a {codec.upper()} byte-order mark but is not valid {codec.upper()}; "
                    "re-save it as UTF-8"
                ) from None
    guess = _utf16_without_bom(data)
    if guess:
        try:
            return _checked(data.decode(guess), what)
        except UnicodeDecodeError:
            pass
    try:
        return _checked(data.decode("utf-8"), what)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise IFSegError(
            f"{what} is not UTF-8 or UTF-16 text (byte 0x{data[e.start]:02X} on line {line}); "
            "re-save it with the encoding UTF-8"
        ) from None
