"""``ifseg-deploy stream``: segment a webcam / video / RTSP / GStreamer source with overlay."""

from __future__ import annotations

import argparse

from .common import add_segmenter_args, load_segmenter


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("stream", help="segment a live or recorded video with overlay")
    p.add_argument("source", help="webcam index (0), video file, rtsp:// or http:// URL, or a GStreamer pipeline")
    add_segmenter_args(p)
    p.add_argument("--save", help="write the overlay video here (.mp4 or .avi)")
    p.add_argument("--show", action="store_true", help="display the overlay in a window (press q to quit)")
    p.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    p.add_argument("--vid-stride", type=int, default=1, help="process every N-th frame (default: 1)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument("--contours", action="store_true", help="draw class boundaries")
    return p


def run(args) -> int:
    from ..errors import IFSegError
    from ..stream import run_stream

    if not args.save and not args.show:
        raise IFSegError("nothing to do: pass --save OUT.mp4 and/or --show")
    if not 0.0 <= args.alpha <= 1.0:
        raise IFSegError("--alpha must be between 0 and 1")
    seg = load_segmenter(args)
    stats = run_stream(
        seg, args.source, args.save, args.show, args.max_frames, args.vid_stride, args.alpha, args.contours,
        on_frame=lambda n, ms: print(f"frame {n}: {ms:.1f} ms ({1000.0 / ms:.1f} FPS)", flush=True),
    )
    if stats.frames == 0:
        raise IFSegError(f"no frame could be read from '{args.source}'")
    print(f"{stats.frames} frames, {stats.fps:.2f} FPS average" + (f"; video saved to {args.save}" if args.save else ""))
    return 0
