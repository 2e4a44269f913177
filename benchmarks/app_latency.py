"""App benchmark (not a test): what ``ifseg-deploy app`` adds on top of the streaming pipeline.

* source-to-client latency: from the moment a frame is read from the source to the moment a WebSocket
  client holds it (JPEG + colour PNG + legend), with the video played at its frame rate (25 fps);
* category change: from sending ``PUT /api/categories`` to the first frame received with the new list
  (and how many frames arrived in between), alternating two lists;
* FPS: ``Stream`` alone over the video (every frame, as ``ifseg-deploy stream`` runs it) against the app
  with ``--no-realtime`` (the same reading of the file, plus the encoding for the browsers and one client
  asking for every frame), and the app at the video's frame rate (live: newest frame only).

The client is aiohttp's, on the same machine, speaking the page's protocol (``{"type": "next"}`` after each
frame); a browser adds its own decode and draw time (the page shows its own "to browser" figure).

    PYTHONPATH=. python3 benchmarks/app_latency.py --json app_bench.json

Model: random OFA-tiny weights as a bundle (real tokenizer, so category lists change like a trained model's)
at a 256-pixel short side, or ``--model`` (any model file: checkpoint, bundle, exported ``.onnx``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before OpenMP starts (torch import)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from aiohttp import ClientSession, WSMsgType, web  # noqa: E402

from ifseg_deploy.app.server import AppServer  # noqa: E402
from ifseg_deploy.app.session import Session  # noqa: E402
from ifseg_deploy.bench.synthetic import random_bundle  # noqa: E402
from ifseg_deploy.config import ofa_preset  # noqa: E402
from ifseg_deploy.preprocess import Preprocessing  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402
from ifseg_deploy.stream import Stream  # noqa: E402

SHARED = Path(os.environ.get("IFSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
IMAGE = SHARED / "media" / "cat_dog.jpeg"
SIZE = (640, 480)
LISTS = ("cat, dog, grass, sky", "animal: cat, dog; plant: grass, tree; sky")


def make_video(path: str, frames: int, fps: int = 25) -> str:
    """MJPEG AVI: the photo at 480 rows panning 4 px per frame, with camera-like noise."""
    photo = cv2.imread(str(IMAGE))
    photo = cv2.resize(photo, (int(photo.shape[1] * SIZE[1] / photo.shape[0]), SIZE[1]), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
    for i in range(frames):
        x = (i * 4) % (photo.shape[1] - SIZE[0])
        view = photo[:, x : x + SIZE[0]].astype(np.float32) + rng.normal(0, 4.0, (SIZE[1], SIZE[0], 3))
        w.write(np.clip(view, 0, 255).astype(np.uint8))
    w.release()
    return path


class Served:
    """The app's server on 127.0.0.1 in a thread of its own."""

    def __init__(self, session: Session):
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(AppServer(session).application())
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", 0).start())
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)


async def watch(url: str, seconds: float, changes: int = 0) -> dict:
    """One client for ``seconds``: latencies of the frames received and, with ``changes``, category
    switches spread over the run (time and frames to the first frame with the new list)."""
    latencies, switch_ms, switch_frames, received = [], [], [], 0
    pending = None  # (list sent, time sent, frames received since)
    k = 0
    async with ClientSession() as client, client.ws_connect(url + "ws") as ws:
        start = time.perf_counter()
        await ws.send_str('{"type": "next"}')
        while time.perf_counter() - start < seconds:
            try:
                msg = await ws.receive(timeout=5)
            except asyncio.TimeoutError:
                break
            if msg.type != WSMsgType.BINARY:
                continue
            now_unix, now = time.time(), time.perf_counter()
            n = int.from_bytes(msg.data[:4], "big")
            head = json.loads(msg.data[4 : 4 + n])
            received += 1
            if received > 3:  # the first frames include the model's warm-up
                latencies.append((now_unix - head["captured_unix"]) * 1e3)
            if pending is not None:
                want, sent, frames = pending
                if head["categories"] == want:
                    switch_ms.append((now - sent) * 1e3)
                    switch_frames.append(frames)
                    pending = None
                else:
                    pending = (want, sent, frames + 1)
            elif changes and received > 3 and now - start > (k + 1) * seconds / (changes + 1):
                text = LISTS[(k + 1) % 2]
                sent = time.perf_counter()
                async with client.put(url + "api/categories", json={"categories": text}) as r:
                    want = (await r.json())["categories"]
                pending, k = (want, sent, 0), k + 1
            await ws.send_str('{"type": "next"}')
        elapsed = time.perf_counter() - start
    return {
        "received": received,
        "fps_received": received / elapsed,
        "latency_ms": latencies,
        "switch_ms": switch_ms,
        "switch_frames": switch_frames,
    }


def stats(values) -> dict:
    if not values:
        return {}
    v = sorted(values)
    return {
        "median": round(statistics.median(v), 1),
        "p90": round(v[min(len(v) - 1, int(0.9 * len(v)))], 1),
        "max": round(v[-1], 1),
        "n": len(v),
    }


def stream_fps(seg: Segmenter, video: str) -> float:
    """Frames per second of ``Stream`` over every frame of ``video`` (after 3 warm-up frames)."""
    t0, n = None, 0
    for _ in Stream(seg, video, temporal=True):
        n += 1
        if n == 3:
            t0 = time.perf_counter()
    return (n - 3) / (time.perf_counter() - t0)


def app_run(seg: Segmenter, video: str, folder: str, realtime: bool, seconds: float, changes: int) -> dict:
    session = Session(seg, [video], out=os.path.join(folder, "runs", "app"), realtime=realtime)
    server = Served(session)
    try:
        seg.set_categories(LISTS[0])
        session.set_categories(LISTS[0])
        out = asyncio.run(watch(server.url, seconds, changes))
        status = session.status()
        out["fps_server"] = status["fps"]
        out["dropped"] = status["dropped"]
        out["stages_ms"] = status["stages_ms"]
        return out
    finally:
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="any model file (default: random OFA-tiny weights as a bundle)")
    p.add_argument("--bpe-dir", default=str(SHARED / "bpe"))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--short-side", type=int, default=256, help="model input short side (default: 256)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each app run (default: 20)")
    p.add_argument("--changes", type=int, default=6, help="category changes in the latency run (default: 6)")
    p.add_argument("--frames", type=int, default=120, help="frames of the video (default: 120)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="app_bench.")
    model = args.model or random_bundle(
        ofa_preset("tiny"), os.path.join(folder, "tiny.safetensors"), ["cat"], args.bpe_dir
    )
    seg = Segmenter.load(
        model,
        LISTS[0],
        bpe_dir=args.bpe_dir,
        device=args.device,
        preprocessing=Preprocessing.short_side_rule(args.short_side),
    )
    video = make_video(os.path.join(folder, "pan.avi"), args.frames)
    live = app_run(seg, video, folder, True, args.seconds, args.changes)
    fast = app_run(seg, video, folder, False, args.seconds, 0)
    seg.set_categories(LISTS[0])
    alone = stream_fps(seg, video)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "model": args.model or "random OFA-tiny bundle",
        "device": args.device,
        "short_side": args.short_side,
        "video": f"{SIZE[0]}x{SIZE[1]} MJPEG, 25 fps, {args.frames} frames",
        "source_to_client_ms": stats(live["latency_ms"]),
        "category_change_ms": stats(live["switch_ms"]),
        "category_change_frames_between": live["switch_frames"],
        "fps": {
            "stream": round(alone, 2),
            "app_server": fast["fps_server"],
            "app_client": round(fast["fps_received"], 2),
            "app_realtime_client": round(live["fps_received"], 2),
        },
        "stages_ms": fast["stages_ms"],
        "dropped_realtime": live["dropped"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
