"""Videos and live sources made by the stream tests (no camera, no network beyond 127.0.0.1)."""

from __future__ import annotations

import contextlib
import http.server
import socketserver
import threading
import time
from fractions import Fraction

import av
import cv2
import numpy as np

W, H = 64, 48


def numbered(i: int, w: int = W, h: int = H) -> np.ndarray:
    """RGB frame whose bottom-right quarter encodes ``i`` (red = i % 16 * 16, green = i // 16 % 16 * 16), the rest
    noise."""
    rng = np.random.default_rng(i)
    f = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    f[h // 2 :, w // 2 :] = (i % 16 * 16, i // 16 % 16 * 16, 128)
    return f


def number_of(rgb: np.ndarray) -> int:
    """Inverse of :func:`numbered` for ``i < 256`` (robust to compression noise)."""
    h, w = rgb.shape[:2]
    half = rgb[h // 2 + 4 : -4, w // 2 + 4 : -4].reshape(-1, 3).astype(np.float64).mean(0)
    return int(round(half[0] / 16)) + 16 * int(round(half[1] / 16))


def write_avi(path, n: int, fps: float = 10.0, size=(W, H)) -> str:
    """Motion-JPEG AVI of ``n`` numbered frames of ``size`` (width, height) (OpenCV)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n):
        w.write(cv2.cvtColor(numbered(i, *size), cv2.COLOR_RGB2BGR))
    w.release()
    return str(path)


def write_mp4(path, n: int, fps: int = 10) -> str:
    """Motion-JPEG in MP4 with the index in front (PyAV, ``faststart``): announces ``n`` frames."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("mjpeg", rate=fps)
        s.width, s.height, s.pix_fmt = W, H, "yuvj420p"
        for i in range(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(numbered(i), format="rgb24")))
        c.mux(s.encode(None))
    return str(path)


def write_vfr(path, times, fmt: str = "mp4") -> str:
    """H.264 video (``fmt``: PyAV container format, "mp4" or "matroska") of numbered frames presented at
    ``times`` (seconds): a variable frame rate, as phones record."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = tb
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(numbered(i), format="rgb24")
            frame.pts, frame.time_base = round(t / tb), tb
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return str(path)


def frame_times(path) -> list:
    """Presentation time (s) of every frame of a video, as PyAV decodes it."""
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def corrupt_avi_frame(path, k: int) -> None:
    """Zero the JPEG data of frame ``k`` (0-based) of an OpenCV MJPEG AVI, in place."""
    data = bytearray(open(path, "rb").read())
    pos = data.find(b"movi")
    for _ in range(k + 1):
        pos = data.find(b"00dc", pos + 4)
    size = int.from_bytes(data[pos + 4 : pos + 8], "little")
    data[pos + 8 : pos + 8 + size] = bytes(size)
    open(path, "wb").write(bytes(data))


def decoded_frames(path) -> list:
    """Every frame of a video, decoded with PyAV (RGB arrays)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


class MJPEGServer:
    """HTTP multipart MJPEG on 127.0.0.1, like an IP camera. ``plan[k]`` is the number of frames the
    k-th connection gets (then the connection closes); 0 answers 503; connections past the plan get 503."""

    def __init__(self, plan, period_s: float = 0.01):
        self.plan = list(plan)
        self.period_s = period_s
        self.connections = 0
        self.sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                k = server.connections
                server.connections += 1
                n = server.plan[k] if k < len(server.plan) else 0
                if n == 0:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(n):
                        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(numbered(server.sent), cv2.COLOR_RGB2BGR))
                        server.sent += 1
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                            + jpg.tobytes()
                            + b"\r\n"
                        )
                        time.sleep(server.period_s)

        self._srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}/video.mjpg"
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
