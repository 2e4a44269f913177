"""Plain Cyclone DDS entities that ROS 2 nodes see as ROS topics (no ROS install).

Rules from rmw_cyclonedds / rmw_dds_common (Jazzy and Humble): a ROS topic ``/a/b`` is the DDS
topic ``rt/a/b``; ``ROS_DOMAIN_ID`` picks the domain (cyclonedds-python does not read it);
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (Iron+) or ``ROS_LOCALHOST_ONLY=1`` (Humble; still
honoured by Jazzy) keep discovery on this machine, which rmw_cyclonedds does with the XML of
:data:`LOCALHOST_XML`. A process is listed by ``ros2 node list`` only when it announces itself on
``ros_discovery_info`` (:class:`DiscoveryInfo`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Mapping, Optional, Sequence

from cyclonedds.core import GuardCondition, InstanceState, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from ..errors import IFSegError
from ..ros.msgs import discovery_types

log = logging.getLogger(__name__)

#: Highest domain id ROS 2 accepts on Linux (docs: About-Domain-ID).
MAX_DOMAIN_ID = 232
#: What rmw_cyclonedds (Jazzy) adds for LOCALHOST discovery: no multicast, unicast discovery of the
#: participant indices on localhost; the loopback interface carries the data.
LOCALHOST_XML = (
    "<CycloneDDS><Domain Id='any'><General><Interfaces><NetworkInterface address='127.0.0.1'/></Interfaces>"
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<MaxAutoParticipantIndex>32</MaxAutoParticipantIndex><Peers><Peer address='localhost'/></Peers>"
    "</Discovery></Domain></CycloneDDS>"
)

#: Camera input: best effort (matches reliable and best-effort cameras), newest sample only.
INPUT_QOS = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1), Policy.Durability.Volatile)
#: Outputs: reliable (rviz2 and image_transport subscribe reliable), newest sample only.
OUTPUT_QOS = Qos(
    Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.History.KeepLast(1), Policy.Durability.Volatile
)
#: LabelInfo: latched (transient local), as vision_msgs asks, so late subscribers get the class list.
LATCHED_QOS = Qos(
    Policy.Reliability.Reliable(duration(milliseconds=100)),
    Policy.History.KeepLast(1),
    Policy.Durability.TransientLocal,
)
#: Commands (the categories topic): reliable, as ``ros2 topic pub`` publishes.
COMMAND_QOS = Qos(
    Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.History.KeepLast(10), Policy.Durability.Volatile
)


def domain_id_from(value: Optional[int], env: Mapping[str, str] = os.environ) -> int:
    """``value``, else ``ROS_DOMAIN_ID``, else 0 (rcl's rule).

    Raises:
        IFSegError: not an integer in 0..232.
    """
    if value is None:
        text = env.get("ROS_DOMAIN_ID", "").strip()
        if not text:
            return 0
        if not text.isdigit():
            raise IFSegError(f"ROS_DOMAIN_ID={text}: must be an integer 0..{MAX_DOMAIN_ID}")
        value = int(text)
    if not 0 <= value <= MAX_DOMAIN_ID:
        raise IFSegError(f"domain_id={value}: must be 0..{MAX_DOMAIN_ID} (ROS 2's range)")
    return value


def localhost_only(env: Mapping[str, str] = os.environ) -> bool:
    """True when the environment keeps ROS 2 discovery on this machine (LOCALHOST range or Humble's
    ROS_LOCALHOST_ONLY=1, which Jazzy still honours first)."""
    return env.get("ROS_LOCALHOST_ONLY", "") == "1" or env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "") == "LOCALHOST"


#: Domains configured by this process (kept referenced: a Domain object deletes its domain when collected).
_DOMAINS: dict = {}


class Participant:
    """A DDS participant in ``domain_id``, configured like a ROS 2 node's (localhost-only when asked or
    when the environment says so, :func:`localhost_only`; the first participant of a domain in a
    process sets its configuration for the others).

    Raises:
        IFSegError: Cyclone DDS cannot create the domain (the message names the cause).
    """

    def __init__(self, domain_id: int, localhost: Optional[bool] = None, user_data: bytes = b"enclave=/;"):
        self.domain_id = domain_id
        self.localhost = localhost_only() if localhost is None else localhost
        try:
            if self.localhost and domain_id not in _DOMAINS:  # configured once per process, then shared
                _DOMAINS[domain_id] = Domain(domain_id, LOCALHOST_XML)
            # USER_DATA "enclave=...;" is what makes ROS 2 graph caches record this participant
            self.dp = DomainParticipant(domain_id, qos=Qos(Policy.Userdata(user_data)))
        except Exception as e:
            raise IFSegError(f"domain_id={domain_id}: cannot join the DDS domain ({e})") from None
        self._topics: dict = {}
        self._threads: list = []
        self._closed = threading.Event()
        self._wake = GuardCondition(self.dp)  # set by close(): every reader thread wakes up and ends

    def topic(self, ros_name: str, data_type) -> Topic:
        """The DDS topic of the ROS topic ``ros_name`` (``/a/b`` -> ``rt/a/b``), one per name."""
        name = "rt" + ros_name
        if name not in self._topics:
            self._topics[name] = Topic(self.dp, name, data_type)
        return self._topics[name]

    def writer(self, ros_name: str, data_type, qos: Qos = OUTPUT_QOS) -> DataWriter:
        """A writer of the ROS topic ``ros_name`` with ``qos``."""
        return DataWriter(self.dp, self.topic(ros_name, data_type), qos=qos)

    def reader(self, topic: Topic, qos: Qos, on_data: Callable[[DataReader], None]) -> DataReader:
        """A reader of ``topic``; a thread of ours calls ``on_data(reader)`` when samples arrive.

        Not a DDS listener: Cyclone calls listeners from its own threads through libffi, and also while
        it tears down a peer's endpoints, which crashed a process whose listener objects Python had
        already collected. A WaitSet in a Python thread has no such hazard.
        """
        reader = DataReader(self.dp, topic, qos=qos)
        waitset = WaitSet(self.dp)
        waitset.attach(ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any))
        waitset.attach(self._wake)

        def loop() -> None:
            while not self._closed.is_set():
                waitset.wait(duration(milliseconds=200))
                if self._closed.is_set():
                    break
                try:
                    on_data(reader)
                except Exception as e:  # a bad sample must not end the subscription
                    log.warning("%s: %s", topic.name, e)

        thread = threading.Thread(target=loop, name=f"dds-{topic.name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return reader

    def close(self) -> None:
        """Stop the readers' threads (each returns from its current ``on_data`` first)."""
        self._closed.set()
        self._wake.set(True)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5.0)
        self._threads.clear()


def expand_name(name: str, namespace: str = "/") -> str:
    """A ROS topic name made absolute (``image`` in ``/robot`` -> ``/robot/image``), as rcl does.

    Raises:
        IFSegError: the name is empty or holds characters ROS names do not allow.
    """
    full = name if name.startswith("/") else namespace.rstrip("/") + "/" + name
    parts = full.strip("/").split("/")
    if not full.strip("/") or any(not p or not (p[0].isalpha() or p[0] == "_") for p in parts):
        raise IFSegError(f"input_topic={name}: not a ROS topic name (letters, digits, _ and /, e.g. /camera/image_raw)")
    if not all(c.isalnum() or c in "_/" for c in full):
        raise IFSegError(f"input_topic={name}: letters, digits, _ and / only")
    return "/" + "/".join(parts)


def gid_bytes(guid, distro: str) -> bytes:
    """A ROS Gid of an entity GUID: 16 bytes (Iron and later) or zero-padded to 24 (Humble)."""
    raw = guid.bytes
    return raw + b"\x00" * 8 if distro == "humble" else raw


class DiscoveryInfo:
    """Announces one node on ``ros_discovery_info`` (reliable, transient local, keep last 1, no ``rt/``
    prefix: rmw_dds_common), so ``ros2 node list`` / ``ros2 node info`` show it.

    Args:
        participant: the node's participant.
        namespace, name: the node's namespace (``/``) and name.
        readers, writers: the node's DDS readers and writers (their GUIDs become Gids).
        distro: ``humble`` (24-byte Gid) or ``iron`` / ``jazzy`` / ``kilted`` / ``rolling`` (16 bytes).
    """

    def __init__(
        self, participant: Participant, namespace: str, name: str, readers: Sequence, writers: Sequence, distro: str
    ):
        infos, node_info, gid = discovery_types(distro)
        qos = Qos(
            Policy.Reliability.Reliable(duration(seconds=1)),
            Policy.History.KeepLast(1),
            Policy.Durability.TransientLocal,
        )
        topic = Topic(participant.dp, "ros_discovery_info", infos)
        self.writer = DataWriter(participant.dp, topic, qos=qos)

        def g(entity) -> object:
            return gid(list(gid_bytes(entity.guid, distro)))

        node = node_info(namespace, name, [g(r) for r in readers], [g(w) for w in writers])
        self.writer.write(infos(g(participant.dp), [node]))
