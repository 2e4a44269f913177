"""``ifseg-deploy app`` end to end: a real browser (headless Debian Chromium through Playwright) on the page
served over a synthetic video and an exported ONNX model, the HTTP API through aiohttp's client, and the
CLI process (token, SIGTERM finalising a recording)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_media import MJPEGServer, decoded_frames, write_avi

aiohttp = pytest.importorskip("aiohttp", reason="the app needs aiohttp: pip install 'ifseg-deploy[app]'")

from aiohttp import web  # noqa: E402

from ifseg_deploy.app.server import AppServer  # noqa: E402
from ifseg_deploy.app.session import Session  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
W, H = 96, 64  # the test video's frame size
NEW = "animal: cat, dog; plant: grass, tree"


def _browser_missing() -> str:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; its own browser download is not needed)"
    return ""


browser_test = pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "-")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, bpe_dir):
    """A tiny model exported to ONNX and a looping 96x64 video."""
    from conftest import save_tiny_bundle

    from ifseg_deploy.cli.main import main

    folder = tmp_path_factory.mktemp("app")
    bundle = save_tiny_bundle(folder / "tiny.safetensors", bpe_dir=bpe_dir)
    onnx = str(folder / "tiny.onnx")
    argv = ["export", "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--format", "onnx", "--out", onnx, "--imgsz", "64"]
    assert main(argv) == 0
    return {"onnx": onnx, "video": write_avi(folder / "video.avi", 20, fps=15, size=(W, H)), "folder": folder}


class Served:
    """An :class:`AppServer` on 127.0.0.1 with its own event loop thread."""

    def __init__(self, session: Session, token=None):
        self.session = session
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(AppServer(session, token).application())
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", 0).start())
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert started.wait(30)
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _segmenter(assets, bpe_dir) -> Segmenter:
    return Segmenter.load(assets["onnx"], bpe_dir=bpe_dir, device="cpu", knn_iters=2)


@pytest.fixture(scope="module")
def served(assets, bpe_dir):
    seg = _segmenter(assets, bpe_dir)
    srv = Served(Session(seg, [assets["video"]], out=str(assets["folder"] / "runs" / "app")))
    yield srv
    srv.close()


def _run(coro):
    """Run ``coro`` on a fresh event loop in its own thread (Playwright's sync API keeps one running here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _api(method: str, url: str, **kwargs):
    """``(status, JSON or bytes, headers)`` of one request, through aiohttp's client."""

    async def go():
        async with aiohttp.ClientSession() as client:
            async with client.request(method, url, **kwargs) as r:
                body = await r.read()
                is_json = r.content_type == "application/json"
                return r.status, json.loads(body) if is_json else body, r.headers

    return _run(go())


def _wait(predicate, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


# -- the HTTP API -------------------------------------------------------------------------------


def test_api_status_categories_and_label_map(served):
    _wait(lambda: served.session.status()["frames"] >= 2, what="two frames")
    code, st, _ = _api("GET", served.url + "api/status")
    assert code == 200
    assert (st["backend"], st["precision"], st["device"]) == ("onnxruntime", "fp32", "cpu")
    assert st["categories"] == ["sky", "grass", "dog"]
    assert st["frames"] >= 2 and st["fps"] > 0
    assert {"network", "preprocess"} <= set(st["stages_ms"])
    code, body, _ = _api("PUT", served.url + "api/categories", json={"categories": ["road", "car"]})
    assert (code, body["categories"]) == (200, ["road", "car"])
    code, body, _ = _api("PUT", served.url + "api/categories", json={"categories": "road, road"})
    assert code == 400 and "\n" not in body["error"] and "road" in body["error"]
    assert served.session.categories == ["road", "car"]  # the refused list changed nothing
    seq = served.session.tile("0").newest.seq
    _wait(lambda: served.session.tile("0").newest.seq >= seq + 1, what="a frame with the new list")
    code, png, headers = _api("GET", served.url + "api/labels.png")
    labels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert code == 200 and labels.shape == (H, W) and labels.dtype == np.uint8
    assert int(labels.max()) <= 1
    assert json.loads(__import__("urllib.parse").parse.unquote(headers["X-Categories"])) == ["road", "car"]
    code, png, _ = _api("GET", served.url + "api/snapshot.png?alpha=0.7")
    assert code == 200 and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (H, W, 3)
    _api("PUT", served.url + "api/categories", json={"categories": "sky, grass, dog"})


def test_api_refuses_bad_requests(served):
    url = served.url
    assert _api("PUT", url + "api/categories", data=b"not json")[0] == 400
    assert _api("PUT", url + "api/categories", json={"categories": 3})[0] == 400
    assert _api("PUT", url + "api/categories", json={"categories": ["c%d" % i for i in range(300)]})[0] == 400
    assert _api("PUT", url + "api/categories", data=b"x" * (1 << 20))[0] == 413  # bodies are bounded
    assert _api("GET", url + "api/recordings/..%2F..%2Fetc%2Fpasswd")[0] == 404  # names, never paths
    assert _api("GET", url + "static/..%2Fsession.py")[0] == 404
    assert _api("GET", url + "api/labels.png?tile=nope")[0] == 404
    assert _api("POST", url + "api/record", json={"action": "explode"})[0] == 400
    code, spec, _ = _api("GET", url + "api/openapi.json")
    assert code == 200 and "/api/categories" in spec["paths"]


def test_ten_websocket_clients_and_one_that_leaves_mid_frame(served):
    async def client(n_frames: int, leave_early: bool = False):
        async with aiohttp.ClientSession() as c:
            async with c.ws_connect(served.url + "ws") as ws:
                got = []
                await ws.send_str('{"type": "next"}')
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        n = int.from_bytes(msg.data[:4], "big")
                        head = json.loads(msg.data[4 : 4 + n])
                        assert len(msg.data) == 4 + n + head["jpeg"] + head["png"]
                        got.append(head["seq"])
                        if leave_early:
                            await c.close()  # gone without a word while the server may be sending
                            return got
                        if len(got) == n_frames:
                            return got
                        await ws.send_str('{"type": "next"}')
                return got

    async def all_clients():
        return await asyncio.gather(client(1, leave_early=True), *[client(3) for _ in range(10)])

    results = _run(asyncio.wait_for(all_clients(), 60))
    for seqs in results[1:]:
        assert len(seqs) == 3 and seqs == sorted(set(seqs))  # newest frames, in order, none twice
    _wait(lambda: len(served.session.tiles) == 1, what="no leftover tile")


def test_lost_live_source_is_reported_and_reconnected(assets, bpe_dir):
    cam = MJPEGServer([3, 0, 200], period_s=0.05)  # 3 frames, one refused connection, then frames again
    session = Session(_segmenter(assets, bpe_dir), [cam.url], out=str(assets["folder"] / "runs" / "lost"))
    try:
        tile = session.tile("0")
        notices = set()
        _wait(lambda: notices.add(tile.status) or "reconnect" in tile.status, what="a reconnect notice")
        _wait(lambda: tile.status == "live" and tile.frames >= 4, timeout=30, what="frames after the reconnect")
        assert any("reconnect" in n for n in notices)
    finally:
        session.close()
        cam.close()


# -- the page in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if _browser_missing():
        pytest.skip(_browser_missing())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(accept_downloads=True)
    context.grant_permissions(["camera"])
    pg = context.new_page()
    pg.goto(served.url)
    yield pg
    context.close()


def _frames(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.frames || 0)"))


def _wait_frames(page, n: int, timeout_ms: int = 20000) -> None:
    page.wait_for_function(f"Number(document.body.dataset.frames || 0) >= {n}", timeout=timeout_ms)


@browser_test
def test_page_shows_advancing_frames_and_the_legend(page):
    _wait_frames(page, 3)
    seqs = [f["seq"] for f in page.evaluate("window.ifsegFrames")]
    assert seqs == sorted(set(seqs))  # every frame newer than the one before
    assert page.locator("#model").inner_text().startswith("onnxruntime")
    names = page.locator(".legend li .cls").all_inner_texts()
    assert names and set(names) <= {"sky", "grass", "dog"}
    shares = [float(s.split()[0]) for s in page.locator(".legend li .share").all_inner_texts()]
    assert abs(sum(shares) - 100) < 0.5
    assert page.locator("canvas").evaluate("c => [c.width, c.height]") == [W, H]


@browser_test
def test_category_change_reaches_legend_and_label_map_within_two_frames(page, served):
    _wait_frames(page, 1)
    page.get_by_label("Categories").fill(NEW)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_function("document.body.dataset.appliedAtFrame !== undefined")
    applied = int(page.evaluate("Number(document.body.dataset.appliedAtFrame)"))
    _wait_frames(page, applied + 2)
    after = [f for f in page.evaluate("window.ifsegFrames") if f["frame"] >= applied + 2]
    assert after and all(f["categories"] == ["animal", "plant"] for f in after)
    assert set(page.locator(".legend li .cls").all_inner_texts()) <= {"animal", "plant"}
    labels = cv2.imdecode(np.frombuffer(_api("GET", served.url + "api/labels.png")[1], np.uint8), -1)
    assert labels.shape == (H, W) and int(labels.max()) <= 1
    # an invalid list: its one-line error on the page, the previous list and legend stay
    page.get_by_label("Categories").fill("cat, cat")
    page.get_by_role("button", name="Apply").click()
    error = page.locator("#cat-error")
    error.wait_for(state="visible")
    page.wait_for_function("document.getElementById('cat-error').textContent.length > 0")
    assert "cat" in error.inner_text() and "\n" not in error.inner_text()
    n = _frames(page)
    _wait_frames(page, n + 2)
    assert set(page.locator(".legend li .cls").all_inner_texts()) <= {"animal", "plant"}
    assert served.session.categories == ["animal", "plant"]
    served.session.set_categories("sky, grass, dog")


@browser_test
def test_snapshot_downloads_the_overlay_and_label_map_at_the_frame_size(page, tmp_path):
    _wait_frames(page, 2)
    page.get_by_role("button", name="Pause").click()
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    page.get_by_role("button", name="Snapshot").click()
    for _ in range(200):  # Playwright delivers events while one of its calls waits
        if len(downloads) == 2:
            break
        page.wait_for_timeout(50)
    assert len(downloads) == 2
    shapes = {}
    for d in downloads:
        path = tmp_path / d.suggested_filename
        d.save_as(path)
        shapes[d.suggested_filename.split("-")[0]] = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape
    assert shapes["snapshot"][:2] == (H, W) and shapes["labels"] == (H, W)


@browser_test
def test_recording_plays_back_with_the_frames_recorded(page, tmp_path):
    _wait_frames(page, 1)
    record = page.get_by_role("button", name="Record")
    record.click()
    page.wait_for_function("document.getElementById('record').getAttribute('aria-pressed') === 'true'")
    _wait_frames(page, _frames(page) + 4)
    record.click()
    link = page.locator("#downloads a").first
    link.wait_for(timeout=20000)
    frames = int(link.inner_text().split("(")[1].split()[0])
    with page.expect_download() as info:
        link.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert frames >= 4
    decoded = decoded_frames(path)
    assert len(decoded) == frames and decoded[0].shape[:2] == (H, W)


@browser_test
def test_browser_camera_is_a_source(page, served):
    _wait_frames(page, 1)
    page.get_by_role("button", name="Camera").click()
    page.wait_for_function("window.ifsegFrames.filter(f => f.tile.startsWith('camera')).length >= 2", timeout=30000)
    cam = [t for t in served.session.tiles.values() if t.camera is not None][0]
    assert cam.newest.frame.shape[:2] == (480, 640)  # Chromium's fake camera, as the page captured it
    page.get_by_role("button", name="Camera").click()
    _wait(lambda: len(served.session.tiles) == 1, what="the camera tile to go")


# -- the command -----------------------------------------------------------------------------------


def test_cli_token_and_sigterm_finalise_the_recording(assets, bpe_dir, tmp_path):
    """The acceptance case: `ifseg-deploy app VIDEO --engine MODEL.onnx --token T`; a request without the
    token is refused; SIGTERM during a recording leaves a finished MP4."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "runs" / "app"
    cmd = [sys.executable, "-m", "ifseg_deploy", "app", assets["video"], "--engine", assets["onnx"]]
    cmd += ["--bpe-dir", bpe_dir, "--port", str(port), "--token", "s3cret", "--out", str(out), "--knn-iters", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        banner = ""
        while "http://" not in banner:
            banner = proc.stdout.readline()
            assert banner or proc.poll() is None, "the app exited before serving"
        url = f"http://127.0.0.1:{port}/"
        assert "?token=s3cret" in banner
        assert _api("GET", url + "api/status")[0] == 401
        assert _api("GET", url + "api/status?token=wrong")[0] == 401
        assert _api("GET", url)[0] == 401  # the page too
        bearer = {"Authorization": "Bearer s3cret"}
        with pytest.raises(aiohttp.WSServerHandshakeError):

            async def ws_without_token():
                async with aiohttp.ClientSession() as c:
                    await c.ws_connect(url + "ws")

            _run(ws_without_token())
        _wait(lambda: _api("GET", url + "api/status", headers=bearer)[1]["frames"] >= 1, 30, "a frame")
        code, rec, _ = _api("POST", url + "api/record?token=s3cret", json={"action": "start"})
        assert code == 200 and rec["recording"]
        _wait(lambda: _api("GET", url + "api/status", headers=bearer)[1]["tiles"][0]["recorded"] >= 3, 30, "3 frames")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        tail = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    video = out / rec["file"]
    assert f"Recording saved to {video}" in tail
    assert len(decoded_frames(video)) >= 3
    assert [p.name for p in out.iterdir() if "partial" in p.name or p.name.startswith(".recording")] == []


def test_stream_restarts_temporal_smoothing_when_the_list_changes(assets, bpe_dir):
    """Class i of a new list is not class i of the old one: the running average starts again with the
    first frame of the new list, even when the class count is the same."""
    from ifseg_deploy.stream import Stream, TemporalSmoother

    seg = _segmenter(assets, bpe_dir)
    smoother = TemporalSmoother()
    started = []
    reset = smoother.reset
    smoother.reset = lambda: (started.append(True), reset())
    seen = []
    for i, (_, result) in enumerate(Stream(seg, assets["video"], temporal=smoother, pipelined=False, max_frames=4)):
        seen.append(result.categories)
        if i == 1:
            seg.set_categories("road, car, tree")
    assert seen == [["sky", "grass", "dog"]] * 2 + [["road", "car", "tree"]] * 2
    assert len(started) == 2  # at the first frame, and at the first frame of the new list
