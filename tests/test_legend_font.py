"""Legend names in any script: drawn as typed with a TrueType font that covers them (fontconfig's
choice, or a font file given by the caller / $IFSEG_FONT), one warning naming the characters no
font covers, a one-line error for a bad font file, and OpenCV's Hershey font kept for ASCII."""

from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np
import pytest

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.visualize import fonts
from ifseg_deploy.visualize import overlay as overlay_module
from ifseg_deploy.visualize.overlay import draw_legend, overlay
from ifseg_deploy.visualize.palette import palette

CYRILLIC_GREEK = ["трава", "кошка", "σκύλος"]
CJK = ["草", "猫", "狗"]


@pytest.fixture(autouse=True)
def _fresh_lookup(monkeypatch):
    """Each test sees its own font lookups and warnings, and no font from the environment."""
    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    lookup = fonts._faces  # the real one, even where a test replaces it
    lookup.cache_clear()
    fonts._warned.clear()
    yield
    lookup.cache_clear()  # no lookup made under a test's fake fontconfig outlives the test
    fonts._warned.clear()


def _fc_list(pattern):
    """Font files fontconfig lists for ``pattern`` (empty without fontconfig)."""
    if shutil.which("fc-list") is None:
        return []
    out = subprocess.run(["fc-list", pattern, "file"], capture_output=True, text=True).stdout
    return sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())


def _legend(names, **kw):
    return draw_legend(np.zeros((400, 600, 3), np.uint8), names, palette(names), **kw)


def _question_marks(names):
    """What the Hershey-only legend drew for these names: one "?" per character."""
    return _legend(["?" * len(n) for n in names])


def _hershey(names, monkeypatch):
    """What the legend drew before TrueType: OpenCV's Hershey font ("?" for Greek, CJK, ...)."""
    with monkeypatch.context() as m:
        m.setattr(overlay_module, "legend_pen", lambda *_: fonts.HERSHEY_PEN)
        return _legend(names)


def _text(image):
    """``(H, W)`` bool: the legend's white text (grey levels; the swatches are coloured)."""
    return (image.min(-1) >= 128) & (image.max(-1) == image.min(-1))


def _font_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == fonts.__name__ and r.levelno == logging.WARNING]


def test_ascii_legend_keeps_the_hershey_font(monkeypatch):
    def no_lookup(*_):
        raise AssertionError("an ASCII legend must not look fonts up")

    monkeypatch.setattr(fonts, "_faces", no_lookup)
    assert fonts.legend_pen(["grass", "cat", "+3 more"]) is fonts.HERSHEY_PEN
    assert _text(_legend(["grass", "cat"])).sum() > 50


@pytest.mark.skipif(
    not _fc_list(":charset=43a 3c3"), reason="no installed font covers Cyrillic and Greek (fc-list ':charset=43a 3c3')"
)
def test_cyrillic_and_greek_names_are_drawn_as_typed(caplog, monkeypatch):
    drawn = _legend(CYRILLIC_GREEK)
    assert (drawn != _question_marks(CYRILLIC_GREEK)).any()
    assert (drawn != _hershey(CYRILLIC_GREEK, monkeypatch)).any()
    assert (_question_marks(["σκύλος"]) == _hershey(["σκύλος"], monkeypatch)).all()  # what this fixes
    assert not _font_warnings(caplog)
    # each name alone: real glyphs, not blank and not missing-glyph boxes (two 5-letter names would then match)
    rows = [_text(_legend([n])) for n in CYRILLIC_GREEK]
    assert all(r.sum() > 50 for r in rows), [int(r.sum()) for r in rows]
    assert (rows[0] != rows[1]).any()
    # the text keeps the legend's geometry: it scales with the image like the Hershey text does
    small = _text(_legend(["кошка"]))
    photo = _text(draw_legend(np.zeros((4000, 6000, 3), np.uint8), ["кошка"], palette(["кошка"])))
    hs, hl = (np.ptp(np.flatnonzero(t.any(1))) + 1 for t in (small, photo))
    assert 8.5 < hl / hs < 11.5, (hs, hl)


def test_names_no_font_covers_warn_once_naming_the_characters(monkeypatch, caplog):
    # fontconfig finds only a Latin font (the real situation without a CJK font; forced here so the test runs anywhere)
    real_fc = fonts._fc

    def latin_only(args):
        out = real_fc(args)
        if out is None or args[0] != "fc-match":
            return out
        han = set("".join(CJK)) | {"犬"}
        return "".join(
            line + "\n"
            for line in out.splitlines()
            if not fonts._covers(fonts._parse_charset(line.split("\t")[-1]), han)
        )

    monkeypatch.setattr(fonts, "_fc", latin_only)
    with caplog.at_level(logging.WARNING):
        first = _legend(CJK)
        _legend(CJK)
        image = np.full((120, 200, 3), 100, np.uint8)
        overlay(image, np.zeros((120, 200), np.int64), CJK)
    warned = _font_warnings(caplog)
    assert len(warned) == 1, warned
    assert "草猫狗" in warned[0]
    assert "U+8349" in warned[0]
    assert "\n" not in warned[0]  # as typed, one line
    assert "fonts-noto-cjk" in warned[0]
    assert fonts.FONT_ENV in warned[0]  # how to fix it
    if fonts._faces(None, frozenset("".join(CJK)))[0]:  # some font found: missing-glyph boxes, not Hershey's "?"
        assert (first != _question_marks(CJK)).any()
    with caplog.at_level(logging.WARNING):
        _legend(["猫", "犬"])  # a new set of characters: one more warning
    assert len(_font_warnings(caplog)) == 2


def test_without_fontconfig_the_legend_warns_and_still_draws(monkeypatch, caplog):
    monkeypatch.setattr(fonts, "_fc", lambda args: None)
    with caplog.at_level(logging.WARNING):
        drawn = _legend(["кошка", "cat"])
    (warned,) = _font_warnings(caplog)
    assert "U+043A U+043E U+0448 U+0430)" in warned  # the distinct letters of "кошка"; Hershey draws "cat"
    assert "fontconfig" in warned
    assert fonts.FONT_ENV in warned
    assert _text(drawn).sum() > 50


def test_bad_font_file_is_a_one_line_error(tmp_path, monkeypatch):
    missing = tmp_path / "nope.ttf"
    with pytest.raises(IFSegError, match="nope.ttf") as e:
        _legend(["cat"], font=str(missing))
    assert "\n" not in str(e.value)
    assert "TrueType" in str(e.value)
    not_a_font = tmp_path / "notes.ttf"
    not_a_font.write_text("not a font")
    with pytest.raises(IFSegError, match="notes.ttf.*cannot read") as e:
        overlay(np.zeros((50, 50, 3), np.uint8), np.zeros((50, 50), np.int64), ["cat"], font=str(not_a_font))
    assert "\n" not in str(e.value)
    monkeypatch.setenv(fonts.FONT_ENV, str(missing))
    with pytest.raises(IFSegError, match=f"{fonts.FONT_ENV} .*nope.ttf"):
        _legend(["cat"])


@pytest.mark.skipif(not _fc_list(":charset=43a"), reason="no installed font covers Cyrillic (fc-list ':charset=43a')")
def test_a_given_font_file_draws_every_name(monkeypatch):
    path = _fc_list(":charset=43a")[0]
    hershey = _legend(["cat"])
    given = _legend(["cat"], font=path)
    assert (given != hershey).any()
    assert _text(given).sum() > 50
    monkeypatch.setenv(fonts.FONT_ENV, path)  # the environment variable is the default
    assert (_legend(["cat"]) == given).all()
    assert (_legend(["кошка"]) != _question_marks(["кошка"])).any()


@pytest.mark.skipif(
    not _fc_list(":lang=zh"),
    reason="no CJK font installed (fc-list ':lang=zh' is empty); install fonts-noto-cjk to run this test",
)
def test_cjk_names_are_drawn_as_typed_when_a_cjk_font_is_installed(caplog):
    with caplog.at_level(logging.WARNING):
        drawn = _legend(CJK)
    assert not _font_warnings(caplog)
    assert (drawn != _question_marks(CJK)).any()
    rows = [_text(_legend([n])) for n in CJK]
    assert all(r.sum() > 20 for r in rows)
    assert (rows[0] != rows[1]).any()


def test_segment_font_flag(tmp_path, capsys, bpe_dir):
    from conftest import save_tiny_bundle
    from PIL import Image

    from ifseg_deploy.cli.main import main

    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
    args = ["segment", str(photo), "--bpe-dir", bpe_dir, "--device", "cpu", "--knn-iters", "1"]
    # a bad font fails before the model is read (this checkpoint does not even exist)
    assert (
        main(
            args
            + [
                "--checkpoint",
                str(tmp_path / "none.pt"),
                "--font",
                str(tmp_path / "nope.ttf"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "\n" not in err
    assert "nope.ttf" in err
    assert not (tmp_path / "x").exists()
    model = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    assert main(args + ["--checkpoint", model, "--out", str(tmp_path / "plain")]) == 0
    assert (
        main(args + ["--checkpoint", model, "--out", str(tmp_path / "font"), "--font", _fc_list(":charset=43a")[0]])
        == 0
    )
    plain, given = (np.asarray(Image.open(tmp_path / d / "p_overlay.png")) for d in ("plain", "font"))
    assert plain.shape == given.shape
    assert (plain != given).any()
