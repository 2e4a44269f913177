"""The web side of ``ifseg-deploy app``: the page, a small HTTP API and one WebSocket per browser.

aiohttp (asyncio, WebSockets built in, small) serves everything from one thread; the model and the
sources run on the :class:`~ifseg_deploy.app.session.Session`'s threads. The WebSocket protocol:

* server -> page, binary, one message per frame: 4-byte big-endian length ``n``, ``n`` bytes of JSON
  (``tile``, ``seq``, ``index``, ``width``, ``height``, ``jpeg`` and ``png`` byte counts, ``categories``,
  ``legend``, ``latency_ms``, ``stages_ms``, ``captured_unix``), then the frame JPEG, then the class colours
  PNG. A frame is sent only after the page asked for the next one (``{"type": "next"}``), and it is the
  newest result of each tile: a slow page or a paused one never builds a backlog.
* server -> page, text: ``{"type": "status", ...}`` (:meth:`Session.status`) twice a second.
* page -> server, binary: a frame of the browser's camera (JPEG); the first one starts a camera tile,
  later ones replace any frame not yet taken (newest wins). Text ``{"type": "camera_stop"}`` ends it.

Safety: binds 127.0.0.1 unless told otherwise; with a token, every request and WebSocket must carry
it (``Authorization: Bearer T`` or ``?token=T``); request bodies, camera frames and category lists are
bounded; no request names a server path (recordings are downloaded by the name the server gave them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import struct
from importlib import resources
from typing import Dict, List, Optional, Set
from urllib.parse import quote

from aiohttp import WSMsgType, web

from ..errors import IFSegError
from ..visualize.overlay import overlay
from .session import Session, Shown, Tile, encode_png, label_png

log = logging.getLogger(__name__)

#: Largest HTTP request body (a category list), bytes.
MAX_BODY = 64 * 1024
#: Largest WebSocket message (a camera frame), bytes.
MAX_WS_MESSAGE = 8 * 1024 * 1024
#: Seconds between status messages on each WebSocket.
STATUS_INTERVAL_S = 0.5
#: The page's files (package data), by the name the page asks for: nothing else is served.
STATIC = {"app.js": "application/javascript", "app.css": "text/css"}


def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def frame_message(tile: Tile, shown: Shown) -> bytes:
    """The binary WebSocket message of one shown frame (layout in the module docstring)."""
    head = {
        "type": "frame",
        "tile": tile.id,
        "name": tile.name,
        "seq": shown.seq,
        "index": shown.index,
        "width": int(shown.frame.shape[1]),
        "height": int(shown.frame.shape[0]),
        "jpeg": len(shown.jpeg),
        "png": len(shown.colors),
        "categories": shown.categories,
        "legend": shown.legend,
        "latency_ms": round(shown.latency_ms, 2),
        "stages_ms": {k: round(v, 3) for k, v in shown.stages_ms.items()},
        "captured_unix": shown.captured_unix,
    }
    data = json.dumps(head).encode()
    return struct.pack(">I", len(data)) + data + shown.jpeg + shown.colors


class AppServer:
    """The aiohttp application over ``session``; ``token``: required on every request when set."""

    def __init__(self, session: Session, token: Optional[str] = None):
        self.session = session
        self.token = token
        self.sockets: Set[web.WebSocketResponse] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event: Optional[asyncio.Event] = None

    # -- application ------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._auth])
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/api/status", self.status)
        app.router.add_put("/api/categories", self.categories)
        app.router.add_get("/api/snapshot.png", self.snapshot)
        app.router.add_get("/api/labels.png", self.labels)
        app.router.add_post("/api/record", self.record)
        app.router.add_get("/api/recordings/{name}", self.recording)
        app.router.add_get("/api/openapi.json", self.openapi)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self.session.listeners.append(self._on_shown)

    def _on_shown(self, tile: Tile, shown: Shown) -> None:  # a tile's thread
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._pulse)

    def _pulse(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _shutdown(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutdown")

    async def _cleanup(self, app: web.Application) -> None:
        # Tiles join their threads and finalise recordings: off the loop
        await asyncio.get_running_loop().run_in_executor(None, self.session.close)

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token is not None:
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return _error(401, "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN")
        return await handler(request)

    # -- page -------------------------------------------------------------------------------

    def _query(self) -> str:
        return f"?token={quote(self.token, safe='')}" if self.token else ""

    async def index(self, request: web.Request) -> web.Response:
        html = _static("index.html").replace("{{query}}", self._query())
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=_static(name), content_type=STATIC[name])

    # -- API --------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.session.status())

    async def _json(self, request: web.Request) -> Optional[dict]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    async def categories(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if body is None or "categories" not in body:
            return _error(400, 'send JSON {"categories": "grass, cat, dog"} or {"categories": ["grass", "cat"]}')
        try:
            loop = asyncio.get_running_loop()
            categories = await loop.run_in_executor(None, self.session.set_categories, body["categories"])
        except IFSegError as e:
            return _error(400, str(e).splitlines()[0])
        return web.json_response({"categories": categories, "categories_text": self.session.category_text})

    def _shown(self, request: web.Request) -> Shown:
        try:
            tile = self.session.tile(request.query.get("tile"))
        except IFSegError as e:
            raise web.HTTPNotFound(text=json.dumps({"error": str(e)}), content_type="application/json") from None
        seq = request.query.get("seq")
        shown = tile.find(int(seq) if seq and seq.isdigit() else None)
        if shown is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": f"tile {tile.id} has no frame yet"}), content_type="application/json"
            )
        return shown

    async def snapshot(self, request: web.Request) -> web.Response:
        """The overlay (with the legend) of the tile's newest frame, or of frame ``seq``, as PNG."""
        shown = self._shown(request)
        try:
            alpha = float(request.query.get("alpha", self.session.alpha))
        except ValueError:
            alpha = -1.0
        if not 0.0 <= alpha <= 1.0:
            return _error(400, "alpha must be a number between 0 and 1")
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(
            None,
            lambda: encode_png(overlay(shown.frame, shown.labels, shown.categories, alpha, font=self.session.font)),
        )
        return web.Response(body=png, content_type="image/png", headers={"X-Frame-Index": str(shown.index)})

    async def labels(self, request: web.Request) -> web.Response:
        """The label map of the tile's newest frame (or frame ``seq``): PNG of the frame's size, uint8 class
        index per pixel (uint16 above 255 classes); the classes in ``X-Categories``."""
        shown = self._shown(request)
        png = await asyncio.get_running_loop().run_in_executor(None, label_png, shown)
        headers = {"X-Categories": quote(json.dumps(shown.categories)), "X-Frame-Index": str(shown.index)}
        return web.Response(body=png, content_type="image/png", headers=headers)

    async def record(self, request: web.Request) -> web.Response:
        body = await self._json(request) if request.can_read_body else {}
        if body is None or body.get("action") not in ("start", "stop", None):
            return _error(400, 'send JSON {"action": "start"} or {"action": "stop"} (optionally "tile")')
        tile_id = body.get("tile")
        try:
            tile = self.session.tile(None if tile_id is None else str(tile_id))
            action = body.get("action") or ("stop" if tile.recording is not None else "start")
            loop = asyncio.get_running_loop()
            if action == "start":
                result = await loop.run_in_executor(None, self.session.start_recording, tile.id)
            else:
                result = await loop.run_in_executor(None, self.session.stop_recording, tile.id)
        except IFSegError as e:
            return _error(400, str(e).splitlines()[0])
        if result.get("file") and not result["recording"]:
            result["url"] = f"api/recordings/{quote(result['file'])}"
        return web.json_response(result)

    async def recording(self, request: web.Request) -> web.StreamResponse:
        path = self.session.recordings.get(request.match_info["name"])  # a name this server gave, never a path
        if path is None:
            return _error(404, "no finished recording of that name")
        return web.FileResponse(
            path, headers={"Content-Disposition": f'attachment; filename="{request.match_info["name"]}"'}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    # -- WebSocket --------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=20.0)
        await ws.prepare(request)
        self.sockets.add(ws)
        wanted = asyncio.Event()
        wanted.set()
        camera: List[Optional[str]] = [None]
        sender = asyncio.ensure_future(self._send(ws, wanted))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        kind = json.loads(msg.data).get("type")
                    except (ValueError, AttributeError):
                        continue
                    if kind == "next":
                        wanted.set()
                    elif kind == "camera_stop":
                        await self._stop_camera(camera)
                elif msg.type == WSMsgType.BINARY:
                    await self._camera_frame(camera, msg.data)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            self.sockets.discard(ws)
            await self._stop_camera(camera)
        return ws

    async def _camera_frame(self, camera: List[Optional[str]], data: bytes) -> None:
        if camera[0] is None or camera[0] not in self.session.tiles:
            loop = asyncio.get_running_loop()
            camera[0], cam = await loop.run_in_executor(None, self.session.add_camera)
        else:
            cam = self.session.tiles[camera[0]].camera
        cam.put(data)

    async def _stop_camera(self, camera: List[Optional[str]]) -> None:
        tile_id, camera[0] = camera[0], None
        if tile_id is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.session.remove, tile_id)

    async def _send(self, ws: web.WebSocketResponse, wanted: asyncio.Event) -> None:
        """Newest frames of every tile, one batch per request of the page, and the status twice a second."""
        sent: Dict[str, int] = {}
        last_status = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not ws.closed:
                now = loop.time()
                if now - last_status >= STATUS_INTERVAL_S:
                    last_status = now
                    await ws.send_str(json.dumps({"type": "status", **self.session.status()}))
                event = self._event  # taken before looking: a frame shown meanwhile sets it
                if wanted.is_set():
                    fresh = [
                        (t, t.newest)
                        for t in list(self.session.tiles.values())
                        if t.newest is not None and t.newest.seq != sent.get(t.id)
                    ]
                    if fresh:
                        wanted.clear()
                        for tile, shown in fresh:
                            sent[tile.id] = shown.seq
                            await ws.send_bytes(frame_message(tile, shown))
                        continue
                    waiter = event.wait()  # for a new frame
                else:
                    waiter = wanted.wait()  # for the page to ask
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, timeout=STATUS_INTERVAL_S)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return  # the page went away mid-frame: nothing to clean up


def _op(summary: str, responses: Dict[str, str], body: Optional[dict] = None, params: Optional[list] = None) -> dict:
    op: dict = {"summary": summary, "responses": {code: {"description": d} for code, d in responses.items()}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


_TILE = {"name": "tile", "in": "query", "required": False, "schema": {"type": "string"}, "description": "tile id"}
_SEQ = {"name": "seq", "in": "query", "required": False, "schema": {"type": "integer"}, "description": "frame seq"}

#: ``GET /api/openapi.json``.
OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "ifseg-deploy app", "version": "1"},
    "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
    "security": [{"token": []}],
    "paths": {
        "/api/status": {
            "get": _op("fps, frames, dropped, categories, stage latencies, backend, device", {"200": "ok"})
        },
        "/api/categories": {
            "put": _op(
                "switch the category list from the next frame on",
                {"200": "the list in force", "400": "refused; the previous list stays"},
                {
                    "type": "object",
                    "required": ["categories"],
                    "properties": {
                        "categories": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
                    },
                },
            )
        },
        "/api/snapshot.png": {
            "get": _op(
                "overlay PNG of the newest frame",
                {"200": "image/png", "503": "no frame yet"},
                params=[_TILE, _SEQ, {"name": "alpha", "in": "query", "schema": {"type": "number"}}],
            )
        },
        "/api/labels.png": {
            "get": _op(
                "label map PNG, the frame's size", {"200": "image/png", "503": "no frame yet"}, params=[_TILE, _SEQ]
            )
        },
        "/api/record": {
            "post": _op(
                "start or stop recording a tile's overlay (MP4)",
                {"200": "recording state; url of a finished recording"},
                {"type": "object", "properties": {"action": {"enum": ["start", "stop"]}, "tile": {"type": "string"}}},
            )
        },
        "/api/recordings/{name}": {
            "get": _op(
                "download a finished recording",
                {"200": "video/mp4", "404": "no such recording"},
                params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
    },
}


def serve(session: Session, host: str = "127.0.0.1", port: int = 7860, token: Optional[str] = None) -> None:
    """Serve ``session`` until SIGINT / SIGTERM, then stop the tiles and finalise any recording."""
    server = AppServer(session, token)
    query = f"?token={quote(token, safe='')}" if token else ""
    shown = f"[{host}]" if ":" in host else host
    web.run_app(
        server.application(),
        host=host,
        port=port,
        print=lambda _: print(f"ifseg-deploy app on http://{shown}:{port}/{query}  (Ctrl-C stops)", flush=True),
        shutdown_timeout=5.0,
        access_log=None,
    )
