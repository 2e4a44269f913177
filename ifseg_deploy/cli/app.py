"""``ifseg-deploy app``: the segmentation of video sources live in a browser, category list changeable while
it runs (:mod:`ifseg_deploy.app`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from ..errors import IFSegError
from ..visualize.fonts import resolve_font
from .common import add_font_arg, add_segmenter_args, load_segmenter

log = logging.getLogger("ifseg_deploy.app")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("app", help="watch the segmentation live in a browser and change the categories while it runs")
    p.add_argument(
        "source",
        nargs="*",
        help="webcam index (0), video file (played in a loop), rtsp:// or http(s):// URL, or a GStreamer pipeline; "
        "several show as tiles; none: the browser's camera only",
    )
    add_segmenter_args(p)
    web = p.add_argument_group("web server")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    web.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    web.add_argument(
        "--token",
        default=os.environ.get("IFSEG_APP_TOKEN"),
        help="require this token on every request (Authorization: Bearer TOKEN or ?token=TOKEN; "
        "default: $IFSEG_APP_TOKEN, else none)",
    )
    p.add_argument(
        "--out",
        default="runs/app",
        help="run folder for recordings: the first free one of OUT, OUT2, ... (default: runs/app)",
    )
    p.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="play video files at their frame rate (default; --no-realtime: every frame, as fast as the model goes)",
    )
    p.add_argument(
        "--temporal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="smooth labels across frames, as stream does (default: on)",
    )
    p.add_argument(
        "--reconnect",
        type=int,
        default=5,
        help="live sources: reopen attempts after the source stops, as stream (default: 5; then again every 5 s)",
    )
    p.add_argument("--topic", help="ROS bag sources: the image topic (default: the bag's only one; the ros extra)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of recordings in [0, 1] (default: 0.5)")
    add_font_arg(p)
    return p


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    try:
        from ..app.server import serve
        from ..app.session import Session
    except ImportError as e:
        raise IFSegError(f"the app needs aiohttp ({e.name} is missing): pip install 'ifseg-deploy[app]'") from None
    if not 0 <= args.port <= 65535:
        raise IFSegError(f"--port {args.port}: must be between 0 and 65535")
    if args.token is not None and not args.token.strip():
        raise IFSegError("--token is empty; pass a secret string, or leave --token out")
    if not _loopback(args.host):
        log.warning(
            f"--host {args.host}: the app is reachable from other machines"
            + ("" if args.token else "; anyone who reaches it can use it: pass --token")
        )
    font = resolve_font(args.font)
    seg = load_segmenter(args)
    try:
        session = Session(
            seg,
            args.source,
            out=args.out,
            realtime=args.realtime,
            temporal=args.temporal,
            reconnect=args.reconnect,
            alpha=args.alpha,
            font=font,
            topic=args.topic,
        )
    except BaseException:
        seg.close()
        raise
    try:
        serve(session, args.host, args.port, args.token)
    except OSError as e:  # the port is taken, the address is not this machine's
        raise IFSegError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); choose another --port or --host"
        ) from None
    finally:
        session.close()
        seg.close()
        for name in sorted(session.recordings):
            print(f"Recording saved to {session.recordings[name]}", flush=True)
    return 0
