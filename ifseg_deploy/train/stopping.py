"""Stopping a training run on SIGINT / SIGTERM (Ctrl-C, ``docker stop``, ``timeout``, SLURM, Kubernetes).

The first signal only sets a flag; the trainer reads it at safe points (after each update, between
held-out batches) and then writes the resumable state and raises :class:`TrainingStopped`. Under
``torchrun`` every process sends its flag with the update's loss all-reduce, so all processes
stop after the same update and rank 0 writes the state. A second signal aborts at once with
:class:`TrainingAborted`; every state file is written atomically, so the one saved before stays
valid. A repeat within :data:`REPEAT_WINDOW_S` of the first is the same request: job schedulers
signal every process of a job and ``torchrun`` forwards the signal it got as well.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator, Optional

from ..errors import IFSegError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds after the first signal during which a second one is taken as a duplicate.
REPEAT_WINDOW_S = 1.0


def signal_exit_code(signum: int) -> int:
    """The shell's exit status of a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class TrainingStopped(IFSegError):
    """Training stopped before the end with its state saved (or named).

    ``reason`` says what happened and where the state is; ``exit_code`` is 130 / 143 after
    SIGINT / SIGTERM and 1 after a failure of another process; ``quiet`` is set on the processes
    that leave the report to rank 0.
    """

    def __init__(self, reason: str, exit_code: int, quiet: bool = False):
        self.reason = reason
        self.exit_code = exit_code
        self.quiet = quiet
        super().__init__(self.line("run it again with resume=True to continue"))

    def line(self, resume: str) -> str:
        """The one-line report: ``reason; resume``."""
        return f"{self.reason}; {resume}"


class TrainingAborted(KeyboardInterrupt):
    """A second SIGINT / SIGTERM: training ended at once; ``exit_code`` as for :class:`TrainingStopped`."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = signal_exit_code(signum)
        super().__init__(f"aborted by a second {signal.Signals(signum).name}")


class StopRequests:
    """SIGINT / SIGTERM handlers for one training run (see the module docstring)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._first = 0.0

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first = signum, now
        elif now - self._first >= REPEAT_WINDOW_S:
            raise TrainingAborted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequests"]:
        """Handle both signals inside the block (main thread only: Python runs handlers there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
