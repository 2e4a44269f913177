"""ROS 2 messages without a ROS install: the message types and their CDR (``msgs``), image messages to
arrays (``images``), bags as a frame source (``bag``), and the segmentation topics written to an MCAP
bag or served to Foxglove (``output``). Needs the ``ros`` extra (cyclonedds, rosbags, mcap,
mcap-ros2-support, foxglove-sdk); importing this package alone needs none of them."""

from __future__ import annotations

import importlib.util

from ..errors import IFSegError

#: Import name of each package of the ``ros`` extra.
EXTRA_MODULES = {"cyclonedds": "cyclonedds", "rosbags": "rosbags", "mcap": "mcap", "foxglove": "foxglove-sdk"}


def require_ros_extra(what: str) -> None:
    """Raise a one-line IFSegError naming the install command when a package of the ``ros`` extra is
    missing (``what``: the feature that needs it, for the message)."""
    missing = [pkg for module, pkg in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise IFSegError(f"{what} needs {', '.join(missing)}: pip install 'ifseg-deploy[ros]'")
