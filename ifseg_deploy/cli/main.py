"""``ifseg-deploy`` entry point: the sub-commands and one-line error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from ..errors import IFSegError
from ..hub import offline_mode
from ..redact import redact_url
from ..version import __version__
from . import app, bench, checks, export, info, ros2, segment, stream, train
from . import eval as evaluate
from .common import add_offline_arg, resolve_checkpoint_arg
from .flags import flag_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifseg-deploy",
        description="Image-free semantic segmentation (IFSeg) for edge deployment.",
    )
    parser.add_argument("--version", action="version", version=f"ifseg-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (app, bench, checks, evaluate, export, info, ros2, segment, stream, train):
        p = module.add_parser(sub)
        p.add_argument("--verbose", action="store_true", help="also print OpenCV's and FFmpeg's own log messages")
        if any(action.dest == "checkpoint" for action in p._actions):  # a model name may need a download
            add_offline_arg(p)
        p.set_defaults(_run=module.run)
    return parser


class _RedactingFormatter(logging.Formatter):
    """Log lines (reconnect notices, warnings) never show a password of a URL, and name flags."""

    def format(self, record: logging.LogRecord) -> str:
        return flag_names(redact_url(super().format(record)))


def native_logging(verbose: bool) -> None:
    """OpenCV's and FFmpeg's own log lines (``[ WARN:0@...]``, ``[h264 @ 0x...]``) only with ``--verbose``:
    otherwise the project's one-line messages say what went wrong, alone."""
    import cv2

    if not verbose:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # FFmpeg inside OpenCV: see stream.sources
        return
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "24"  # AV_LOG_WARNING; read when OpenCV first opens a video
    try:
        import av.logging
    except ImportError:  # the video extra is optional
        return
    av.logging.set_level(av.logging.WARNING)  # PyAV keeps FFmpeg silent by default


def main(argv: Optional[List[str]] = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(_RedactingFormatter("%(levelname)s: %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.WARNING)
    logging.addLevelName(logging.WARNING, "warning")
    parser = build_parser()
    args = parser.parse_args(argv)
    native_logging(args.verbose)
    try:
        with offline_mode(getattr(args, "offline", False)):
            resolve_checkpoint_arg(args)
            return int(args._run(args) or 0)
    except IFSegError as e:  # the message is redacted where it is made; this is the last line of defence
        print(f"error: {flag_names(redact_url(str(e)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    except Exception as e:  # last resort: still one line, traceback on request
        if os.environ.get("IFSEG_DEBUG"):
            raise
        if isinstance(e, ModuleNotFoundError) and e.name:  # an optional package (the extras hold them)
            from ..checks.environment import module_install_hint

            top = e.name.split(".")[0]
            print(f"error: this needs the {top} package: {module_install_hint(e.name)}", file=sys.stderr)
            return 2
        msg = redact_url(str(e).strip().splitlines()[0]) if str(e).strip() else ""
        print(
            f"error: unexpected {type(e).__name__}: {msg[:200]} (set IFSEG_DEBUG=1 for the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
