"""Models by name: downloaded once into the cache from a mirror (a local HTTP server with Range
support, or a folder), resumed after a broken connection, refused when not a checkpoint, never
fetched offline. No internet: everything is served from 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ifseg_deploy
from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.hub import MODELS, bpe_folder, cached_models, resolve_checkpoint
from ifseg_deploy.hub.download import ATTEMPTS
from ifseg_deploy.preprocess import Preprocessing
from ifseg_deploy.text.tokenizer import BPE_FILES

HTML = b"<!DOCTYPE html>\n<html><body>Quota exceeded</body></html>\n"


class Mirror:
    """A mirror on 127.0.0.1 serving the files of ``folder`` with ``Range`` support. ``drops[name]``:
    that many answers for ``name`` stop half-way (the connection closes); ``html``: names answered
    with an HTML page (``Content-Type: text/html``, or ``disguised``: sent as a binary file)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.requests = []  # (file name, Range header or None)
        self.auth = []  # Authorization headers
        self.drops = {}
        self.html = set()
        self.disguised = set()
        self._data = {}
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.answer(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def file(self, name: str) -> bytes:
        if name not in self._data:
            self._data[name] = (self.folder / name).read_bytes()
        return self._data[name]

    def answer(self, h: http.server.BaseHTTPRequestHandler) -> None:
        name = h.path.lstrip("/")
        self.requests.append((name, h.headers.get("Range")))
        self.auth.append(h.headers.get("Authorization"))
        if name in self.html or name in self.disguised:
            h.send_response(200)
            h.send_header("Content-Type", "text/html" if name in self.html else "application/octet-stream")
            h.send_header("Content-Length", str(len(HTML)))
            h.end_headers()
            h.wfile.write(HTML)
            return
        if not (self.folder / name).is_file():
            h.send_error(404)
            return
        data = self.file(name)
        start = 0
        if h.headers.get("Range"):
            start = int(re.fullmatch(r"bytes=(\d+)-", h.headers["Range"]).group(1))
            if start >= len(data):
                h.send_error(416)
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if self.drops.get(name, 0) > 0:
            self.drops[name] -= 1
            h.wfile.write(body[: len(body) // 2])
            h.close_connection = True
            return
        h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files(tmp_path, ofa_checkpoint, bpe_dir) -> Path:
    """The mirror's folder: the dev fixture's plain OFA checkpoint as ``ofa_tiny.pt``, the BPE files."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    os.symlink(ofa_checkpoint, folder / "ofa_tiny.pt")
    for name in BPE_FILES:
        os.symlink(os.path.join(bpe_dir, name), folder / name)
    return folder


@pytest.fixture
def mirror(files):
    server = Mirror(files)
    yield server
    server.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("IFSEG_CACHE", str(folder))
    monkeypatch.delenv("IFSEG_OFFLINE", raising=False)
    monkeypatch.delenv("IFSEG_MIRROR", raising=False)
    return folder


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _everything(folder: Path) -> list:
    """Every file under ``folder``, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _one_line_error(call) -> str:
    with pytest.raises(IFSegError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_download_once_then_the_cache_serves_without_the_server(cache, mirror, files, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url)
    path = resolve_checkpoint("ofa-tiny")
    assert path == str(cache / "ofa_tiny.pt")
    assert _sha(path) == _sha(files / "ofa_tiny.pt")
    bpe = bpe_folder(None, path)
    assert bpe == str(cache / "bpe")
    for name in BPE_FILES:
        assert _sha(os.path.join(bpe, name)) == _sha(files / name)
    assert _everything(cache) == ["bpe/dict.txt", "bpe/encoder.json", "bpe/vocab.bpe", "ofa_tiny.pt"]
    assert [(m.name, m.size, m.path) for m in cached_models()] == [("ofa-tiny", os.path.getsize(path), path)]
    served = len(mirror.requests)
    mirror.close()
    assert resolve_checkpoint("ofa-tiny") == path
    assert bpe_folder(None, path) == bpe
    assert len(mirror.requests) == served == 4
    monkeypatch.setenv("IFSEG_OFFLINE", "1")
    assert resolve_checkpoint("ofa-tiny") == path


def test_a_broken_connection_is_resumed_with_range(cache, mirror, files, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url)
    size = os.path.getsize(files / "ofa_tiny.pt")
    mirror.drops["ofa_tiny.pt"] = 1
    path = resolve_checkpoint("ofa-tiny")
    assert _sha(path) == _sha(files / "ofa_tiny.pt")
    assert mirror.requests == [("ofa_tiny.pt", None), ("ofa_tiny.pt", f"bytes={size // 2}-")]
    assert _everything(cache) == ["ofa_tiny.pt"]


def test_the_partial_file_is_kept_and_resumed_by_the_next_call(cache, mirror, files, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url)
    mirror.drops["ofa_tiny.pt"] = ATTEMPTS
    message = _one_line_error(lambda: resolve_checkpoint("ofa-tiny"))
    assert message.startswith(f"checkpoint='ofa-tiny': cannot download {mirror.url}ofa_tiny.pt (the connection broke")
    assert "received are kept and the next try resumes" in message
    assert str(cache / "ofa_tiny.pt") in message
    assert _everything(cache) == [".ofa_tiny.pt.part"]  # under a temporary name: never used as the model
    kept = os.path.getsize(cache / ".ofa_tiny.pt.part")
    assert 0 < kept < os.path.getsize(files / "ofa_tiny.pt")
    path = resolve_checkpoint("ofa-tiny")
    assert mirror.requests[-1] == ("ofa_tiny.pt", f"bytes={kept}-")
    assert _sha(path) == _sha(files / "ofa_tiny.pt")
    assert _everything(cache) == ["ofa_tiny.pt"]


def test_parallel_processes_download_once(cache, mirror, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(resolve_checkpoint("ofa-tiny"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert paths == [str(cache / "ofa_tiny.pt")] * 3
    assert mirror.requests == [("ofa_tiny.pt", None)]


def test_credentials_in_the_mirror_url_are_sent_never_shown(cache, mirror, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url.replace("http://", "http://me:S3cret@"))
    resolve_checkpoint("ofa-tiny")
    assert mirror.auth == ["Basic " + base64.b64encode(b"me:S3cret").decode()]
    message = _one_line_error(lambda: resolve_checkpoint("ofa-large"))
    assert "HTTP 404" in message
    assert "me:***@127.0.0.1" in message
    assert "S3cret" not in message


def test_missing_html_and_corrupt_files_leave_nothing(cache, mirror, files, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url)
    os.remove(files / "ofa_tiny.pt")
    message = _one_line_error(lambda: resolve_checkpoint("ofa-tiny"))
    assert message == (
        f"checkpoint='ofa-tiny': cannot download {mirror.url}ofa_tiny.pt (HTTP 404 Not Found); try again, "
        f"or download it by hand and put it at {cache / 'ofa_tiny.pt'}"
    )
    assert _everything(cache) == []
    for kind in (mirror.html, mirror.disguised):
        kind.add("ofa_tiny.pt")
        assert "(the server answered with an HTML page, not the file" in _one_line_error(
            lambda: resolve_checkpoint("ofa-tiny")
        )
        assert _everything(cache) == []
        kind.clear()
    # A complete transfer of something that is not a checkpoint: the structural check refuses it.
    (files / "ofa_tiny.pt").write_bytes(b"PK\x03\x04" + os.urandom(4096))
    message = _one_line_error(lambda: resolve_checkpoint("ofa-tiny"))
    assert re.search(r"\(the file is truncated or damaged .*; removed it\)", message), message
    assert _everything(cache) == []
    # BPE files must be OFA's exact bytes.
    (files / "dict.txt").unlink()
    (files / "dict.txt").write_text("50256 1\n")
    model = files / "elsewhere" / "m.pt"
    message = _one_line_error(lambda: bpe_folder(None, str(model)))
    assert message.startswith(f"no `bpe_dir` given and no BPE files beside {model}: cannot download {mirror.url}")
    assert "(its SHA-256 is not that of OFA's utils/BPE/dict.txt; removed it)" in message
    assert "dict.txt" not in _everything(cache / "bpe")


def test_offline_or_unreachable_names_the_url_and_the_place(cache, monkeypatch, capsys):
    monkeypatch.setenv("IFSEG_OFFLINE", "1")
    official = MODELS["ofa-base"].url
    assert official == "https://ofa-beijing.oss-cn-beijing.aliyuncs.com/checkpoints/ofa_base.pt"
    assert _one_line_error(lambda: resolve_checkpoint("ofa-base")) == (
        f"checkpoint='ofa-base': ofa_base.pt is not in the cache and IFSEG_OFFLINE=1 forbids downloads; "
        f"download {official} by hand and put it at {cache / 'ofa_base.pt'}"
    )
    # The BPE files missing offline are named together, so that one trip to a connected machine fetches them all.
    assert _one_line_error(lambda: bpe_folder(None, None)) == (
        "no `bpe_dir` given and no BPE files beside the model: encoder.json, vocab.bpe, dict.txt are not in the "
        "cache and IFSEG_OFFLINE=1 forbids downloads; download them from "
        f"https://raw.githubusercontent.com/OFA-Sys/OFA/main/utils/BPE/ by hand and put them in {cache / 'bpe'}"
    )
    (cache / "bpe").mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        (cache / "bpe" / name).write_text("{}")
    assert _one_line_error(lambda: bpe_folder(None, None)) == (
        "no `bpe_dir` given and no BPE files beside the model: dict.txt is not in the cache and IFSEG_OFFLINE=1 "
        "forbids downloads; download https://raw.githubusercontent.com/OFA-Sys/OFA/main/utils/BPE/dict.txt by hand "
        f"and put it at {cache / 'bpe' / 'dict.txt'}"
    )
    for name in ("encoder.json", "vocab.bpe"):
        (cache / "bpe" / name).unlink()
    monkeypatch.delenv("IFSEG_OFFLINE")
    assert main(["info", "ofa-base", "--offline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: --checkpoint ofa-base: ofa_base.pt is not in the cache and --offline forbids downloads; "
        f"download {official} by hand and put it at {cache / 'ofa_base.pt'}"
    ]
    # A mirror nobody answers at: the same one line, the URL tried, nothing written.
    closed = Mirror(cache.parent)
    closed.close()
    monkeypatch.setenv("IFSEG_MIRROR", closed.url)
    message = _one_line_error(lambda: resolve_checkpoint("ofa-tiny"))
    assert message.startswith(f"checkpoint='ofa-tiny': cannot download {closed.url}ofa_tiny.pt (cannot connect")
    assert message.endswith(f"put it at {cache / 'ofa_tiny.pt'}")
    assert _everything(cache) == []


def test_mirror_folder(cache, files, monkeypatch):
    monkeypatch.setenv("IFSEG_MIRROR", str(files))
    monkeypatch.setenv("IFSEG_OFFLINE", "1")  # a folder is no download: the air-gapped set-up
    path = resolve_checkpoint("ofa-tiny")
    assert _sha(path) == _sha(files / "ofa_tiny.pt")
    assert bpe_folder(None, path) == str(cache / "bpe")
    message = _one_line_error(lambda: resolve_checkpoint("ifseg-web-demo"))
    assert message.startswith(f"checkpoint='ifseg-web-demo': cannot download {files / 'figure_checkpoint.pt'}")
    monkeypatch.setenv("IFSEG_MIRROR", str(files / "nowhere"))
    assert "is neither an http(s):// URL nor an existing folder" in _one_line_error(
        lambda: resolve_checkpoint("ofa-medium")
    )


def test_names_and_paths(cache, tmp_path):
    assert _one_line_error(lambda: resolve_checkpoint("ofa-tny")).startswith(
        "checkpoint='ofa-tny': no such file, and no model of that name; did you mean 'ofa-tiny'? names: ofa-tiny,"
    )
    assert resolve_checkpoint("missing/model.pt") == "missing/model.pt"  # the loader says it is missing
    own = tmp_path / "ofa-tiny"
    own.write_bytes(b"x")
    assert resolve_checkpoint(str(own)) == str(own)  # a file that exists is always the file
    message = _one_line_error(lambda: resolve_checkpoint("ifseg-web-demo"))
    assert "drive.google.com/file/d/167sIrrSsBTRQlrVHYMKYoWA5A9r04eAD" in message
    assert f"put it at {cache / 'figure_checkpoint.pt'}" in message
    assert _everything(cache) == []


def test_load_info_and_segment_by_name(cache, mirror, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("IFSEG_MIRROR", mirror.url)
    small = Preprocessing.short_side_rule(64)  # the model's own 512 px would only make the test slow
    seg = ifseg_deploy.load("ofa-tiny", "grass, cat", device="cpu", knn_iters=1, preprocessing=small)
    assert seg.categories == ["grass", "cat"]
    assert seg.segment(np.zeros((40, 50, 3), np.uint8)).labels.shape == (40, 50)
    mirror.close()
    capsys.readouterr()
    assert main(["info", "ofa-tiny", "--json"]) == 0
    assert '"kind": "plain OFA"' in capsys.readouterr().out
    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"ofa-tiny +{re.escape(str(cache / 'ofa_tiny.pt'))} \(\d+\.\d MB\)", listing), listing
    assert "ofa-base        not cached; from https://ofa-beijing" in listing
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    args = [
        "segment",
        str(image),
        "--checkpoint",
        "ofa-tiny",
        "--categories",
        "grass, cat",
        "--device",
        "cpu",
        "--imgsz",
        "64",
    ]
    assert main([*args, "--offline", "--knn-iters", "0", "--out", str(out)]) == 0
    assert (out / "a_labels.png").is_file()


def test_the_air_gap_recipe_of_the_models_page_fetches_what_it_says(cache, files, monkeypatch):
    """docs/models.md's ``python3 -c`` steps, run as written against a mirror folder: they fill the
    cache's ``bpe/`` folder (a plain OFA model has no categories, so loading one would stop first)."""
    import shlex
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "models.md").read_text(encoding="utf-8")
    snippets = [shlex.split(found)[2] for found in re.findall(r'python3 -c "[^"]+"', text)]
    assert snippets, "docs/models.md shows how to fetch the BPE files"
    env = {**os.environ, "IFSEG_MIRROR": str(files), "IFSEG_OFFLINE": "1", "PYTHONPATH": str(root)}
    for code in snippets:
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, capture_output=True)
    assert _everything(cache) == ["bpe/dict.txt", "bpe/encoder.json", "bpe/vocab.bpe"]
