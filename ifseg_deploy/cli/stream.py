"""``ifseg-deploy stream``: segment a webcam / video / RTSP / HTTP / GStreamer source with overlay."""

from __future__ import annotations

import argparse
import logging

from ..errors import IFSegError
from ..visualize.fonts import resolve_font
from .common import add_font_arg, add_segmenter_args, load_segmenter
from .flags import flag_names

log = logging.getLogger("ifseg_deploy.stream")


class _ListTopics(argparse.Action):
    """``stream BAG --list-topics``: print the bag's image topics and exit (no model needed)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if namespace.source is None:
            parser.error("name the bag first: ifseg-deploy stream BAG --list-topics")
        from ..ros import require_ros_extra
        from ..ros.bag import image_topics

        try:
            require_ros_extra("--list-topics")
            topics = image_topics(namespace.source)
        except IFSegError as e:
            parser.exit(2, f"error: {flag_names(str(e))}\n")
        for topic, (msgtype, count) in topics.items():
            print(f"{topic}\t{msgtype}\t{count} messages")
        parser.exit(0 if topics else 2, "" if topics else f"error: {namespace.source} holds no image topic\n")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("stream", help="segment a live or recorded video with overlay")
    p.add_argument(
        "source",
        help="webcam index (0), video file, rtsp:// or http(s):// URL, GStreamer pipeline, "
        "or ROS bag (.mcap, .db3 or its folder, ROS 1 .bag; the ros extra)",
    )
    bag = p.add_argument_group("ROS bags and Foxglove (the ros extra; see docs/ros2.md)")
    bag.add_argument("--topic", help="bags: the sensor_msgs/Image or CompressedImage topic (default: the only one)")
    bag.add_argument(
        "--list-topics", nargs=0, action=_ListTopics, help="bags: list the image topics with their counts and exit"
    )
    add_segmenter_args(p)
    out = p.add_argument_group("outputs (at least one)")
    out.add_argument(
        "--save",
        help="write the overlay video here (.mp4: H.264 with the video extra, else mp4v; .avi: MJPEG), "
        "or a ROS 2 bag (.mcap: label maps, overlays and class lists on /ifseg/...; the ros extra)",
    )
    out.add_argument(
        "--foxglove",
        nargs="?",
        type=int,
        const=8765,
        metavar="PORT",
        help="serve label maps, overlays and class lists live over the Foxglove WebSocket protocol, the topics "
        "--save OUT.mcap writes (default port: 8765; the ros extra)",
    )
    out.add_argument(
        "--foxglove-host", default="127.0.0.1", help="address --foxglove binds (default: 127.0.0.1, this machine only)"
    )
    out.add_argument(
        "--show", action="store_true", help="display the overlay in a window, q quits (needs the gui extra)"
    )
    out.add_argument(
        "--save-labels", metavar="DIR", help="write a label PNG per processed frame (<frame>.png) into DIR"
    )
    out.add_argument("--save-json", metavar="FILE", help="write JSON Lines: frame, time (s), area fraction per class")
    out.add_argument(
        "--exist-ok",
        action="store_true",
        help="--save-labels may name a folder holding other files (none of them is ever replaced)",
    )
    add_font_arg(p)
    p.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    p.add_argument("--vid-stride", type=int, default=1, help="video files: process every N-th frame (default: 1)")
    p.add_argument(
        "--temporal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="smooth labels across frames: moving average of the class probabilities where the scene did not "
        "change, reset on scene cuts (default: on; --no-temporal: each frame on its own)",
    )
    p.add_argument(
        "--reconnect",
        type=int,
        default=5,
        help="live sources: reopen attempts after the source stops, waits doubling from 0.5 s (default: 5)",
    )
    p.add_argument(
        "--max-bad-frames",
        type=int,
        default=30,
        help="video files: unreadable frames in a row before the file counts as ended (default: 30)",
    )
    p.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the source as live (newest frame only) or recorded (every frame); "
        "default: live for webcams, URLs and pipelines",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument("--contours", action="store_true", help="draw class boundaries")
    p.add_argument("--no-hud", dest="hud", action="store_false", help="no FPS / latency / drops text on the frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar or status line")
    return p


def run(args) -> int:
    from ..stream import OutputOptions, Stream, run_stream

    opts = OutputOptions(
        save=args.save,
        show=args.show,
        save_labels=args.save_labels,
        save_json=args.save_json,
        hud=args.hud,
        alpha=args.alpha,
        contours=args.contours,
        progress=not args.quiet,
        exist_ok=args.exist_ok,
        font=resolve_font(args.font),
        foxglove=args.foxglove,
        foxglove_host=args.foxglove_host,
    )
    opts.check()
    seg = load_segmenter(args)
    stream = Stream(
        seg,
        args.source,
        live=args.live,
        vid_stride=args.vid_stride,
        max_frames=args.max_frames,
        temporal=args.temporal,
        reconnect=args.reconnect,
        max_bad_frames=args.max_bad_frames,
        notify=log.warning,
        topic=args.topic,
    )
    try:
        summary = run_stream(stream, opts)
    finally:
        if stream.summary.end:  # the stream ran (not refused at the start)
            print(stream.summary.format(), flush=True)
        if args.save and stream.summary.processed:
            print(f"Video saved to {args.save}", flush=True)
    if summary.processed == 0:
        raise IFSegError(f"no frame could be read from '{stream.source.name}'")
    return 0
