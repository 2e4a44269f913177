"""``ifseg-deploy ros2``: a ROS 2 segmentation node over DDS (Cyclone DDS; no ROS install needed)."""

from __future__ import annotations

import argparse
import signal
import threading

from ..visualize.fonts import resolve_font
from .common import add_font_arg, add_segmenter_args, load_segmenter


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ros2",
        help="ROS 2 node: segment a camera topic, publish label maps, overlays and class lists (the ros extra)",
    )
    p.add_argument("--input", required=True, help="camera topic, e.g. /camera/image_raw (sensor_msgs/Image)")
    p.add_argument("--compressed", action="store_true", help="the input topic is sensor_msgs/CompressedImage")
    p.add_argument(
        "--name",
        default="ifseg",
        help="node name; outputs go to /<name>/labels, /<name>/overlay/compressed, /<name>/label_info and "
        "commands come on /<name>/categories (default: ifseg)",
    )
    p.add_argument("--domain-id", type=int, help="ROS domain id (default: $ROS_DOMAIN_ID, else 0)")
    p.add_argument(
        "--ros-distro",
        default="jazzy",
        help="announce the node on ros_discovery_info in this distro's layout (humble, iron, jazzy, kilted, "
        "rolling; default: jazzy), so `ros2 node list` shows it; 'none' announces nothing",
    )
    add_segmenter_args(p)
    add_font_arg(p)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument("--contours", action="store_true", help="draw class boundaries on the overlay")
    p.add_argument(
        "--overlay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish the overlay (JPEG); --no-overlay saves its drawing and encoding, the largest cost "
        "besides the network (default: on)",
    )
    p.add_argument(
        "--temporal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="smooth labels across frames (as stream; restarted when the categories change; default: on)",
    )
    p.add_argument("--max-frames", type=int, help="exit after this many published frames")
    return p


def run(args) -> int:
    from ..errors import IFSegError
    from ..ros import require_ros_extra

    require_ros_extra("ifseg-deploy ros2")
    from ..ros2node.dds import domain_id_from
    from ..ros2node.node import SegmentationNode
    from ..visualize.overlay import overlay

    if not 0.0 <= args.alpha <= 1.0:
        raise IFSegError(f"alpha={args.alpha}: must be between 0 and 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise IFSegError(f"max_frames={args.max_frames}: must be >= 1")
    domain_id = domain_id_from(args.domain_id)
    font = resolve_font(args.font)
    seg = load_segmenter(args)

    def draw(rgb, labels, categories):
        return overlay(rgb, labels, categories, args.alpha, args.contours, font=font)

    node = SegmentationNode(
        seg,
        args.input,
        compressed=args.compressed,
        name=args.name,
        domain_id=domain_id,
        draw=draw,
        with_overlay=args.overlay,
        temporal=args.temporal,
        ros_distro=None if args.ros_distro == "none" else args.ros_distro,
        notify=lambda line: print(line, flush=True),
    )
    print(
        f"ros2: node /{args.name} on domain {domain_id}"
        + (" (localhost only)" if node.participant.localhost else "")
        + f": {node.input_topic} -> {', '.join(node.writers)}; categories on {node.categories_topic}",
        flush=True,
    )
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: node.stop())
    try:
        stats = node.spin(args.max_frames)
    finally:
        node.close()
    print(
        f"ros2: stopped; received {stats.received}, published {stats.processed}, dropped {stats.dropped}, "
        f"skipped {stats.skipped}, category changes {stats.category_changes}",
        flush=True,
    )
    return 0
