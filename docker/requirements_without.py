"""Print the requirements of an installed distribution and some of its extras, leaving out named
packages: one requirement a line, ready for ``pip install -r``.

The Jetson image installs ifseg-deploy with ``pip install --no-deps`` and then these requirements
without pip's OpenCV wheels, so JetPack's GStreamer-enabled OpenCV (apt ``libopencv-python``) stays
the ``cv2`` that Python imports::

    python3 docker/requirements_without.py ifseg-deploy jetson opencv-python-headless,opencv-python > requirements.txt

Markers other than ``extra == "NAME"`` are refused (exit status 1), so nothing is dropped silently.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, requires
from typing import List, Sequence

EXTRA_MARKER = re.compile(r'extra\s*==\s*["\']([^"\']+)["\']')
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_without(dist: str, extras: Sequence[str], exclude: Sequence[str]) -> List[str]:
    """Base requirements of ``dist`` plus those of ``extras``, minus the ``exclude`` projects.

    Raises:
        PackageNotFoundError: ``dist`` is not installed.
        ValueError: a requirement has an environment marker other than ``extra == "..."``.
    """
    wanted, dropped = {canonical(e) for e in extras}, {canonical(x) for x in exclude}
    out = []
    for line in requires(dist) or []:
        spec, _, marker = (part.strip() for part in line.partition(";"))
        if marker:
            match = EXTRA_MARKER.fullmatch(marker)
            if match is None:
                raise ValueError(f"unsupported environment marker in {line!r}")
            if canonical(match.group(1)) not in wanted:
                continue
        name = NAME.match(spec)
        if name is None:
            raise ValueError(f"cannot read the project name of {line!r}")
        if canonical(name.group(0)) not in dropped:
            out.append(spec)
    return out


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3:
        print("usage: requirements_without.py DIST EXTRA[,EXTRA...] EXCLUDE[,EXCLUDE...]", file=sys.stderr)
        return 2
    dist, extras, exclude = argv[0], [e for e in argv[1].split(",") if e], [x for x in argv[2].split(",") if x]
    try:
        print("\n".join(requirements_without(dist, extras, exclude)))
    except PackageNotFoundError:
        print(f"error: {dist} is not installed; install it first (pip install --no-deps ./)", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
