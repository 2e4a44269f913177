"""One OpenVINO ``Core`` per process, and the calling thread's alternate signal stack kept across
OpenVINO work that makes Cores of its own.

OpenVINO's CPU plugin (seen with 2026.4) gives the thread that creates a plugin instance an alternate
signal stack (``sigaltstack``) and puts the previous one back when that instance ends. When two
instances end in the order they were created, the thread is left on the first one's stack, already
freed: the next signal Python handles there (Ctrl-C, SIGTERM, a child process's SIGCHLD; CPython
installs its handlers with ``SA_ONSTACK``) kills the process with SIGSEGV, losing whatever a stream
or a training run had not saved yet. One shared :func:`core` means one plugin instance that lives as
long as the process; :func:`keep_signal_stack` puts the stack back after work that creates and drops
Cores itself (NNCF's quantisation and accuracy control).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
from typing import Any, Iterator, Optional

from ..errors import IFSegError


def import_openvino() -> Any:
    """The ``openvino`` module; :class:`IFSegError` with the install command when it is missing."""
    try:
        import openvino
    except ImportError:
        raise IFSegError("running OpenVINO models needs openvino: pip install 'ifseg-deploy[openvino]'") from None
    return openvino


@functools.lru_cache(maxsize=None)
def core() -> Any:
    """The process's ``openvino.Core`` (created on first use, never released: see the module docstring)."""
    return import_openvino().Core()


class _StackT(ctypes.Structure):
    """glibc / musl ``stack_t`` on Linux."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _sigaltstack(new: Optional[_StackT]) -> Optional[_StackT]:
    """The thread's alternate signal stack before the call (set to ``new`` unless None); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    old = _StackT()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigaltstack(None if new is None else ctypes.byref(new), ctypes.byref(old)) != 0:
        return None
    return old


def signal_stack() -> Optional[tuple]:
    """This thread's alternate signal stack as ``(address, size, flags)`` (Linux; None elsewhere)."""
    s = _sigaltstack(None)
    return None if s is None else (s.ss_sp or 0, s.ss_size, s.ss_flags)


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Run the block, then give this thread back the alternate signal stack it had before it.

    Objects the block dropped are collected first, so OpenVINO plugin instances it made end here and
    not at a later collection; one that ends later still finds a stack that is not its own and leaves
    it alone. A no-op off Linux."""
    before = _sigaltstack(None)
    try:
        yield
    finally:
        gc.collect()
        if before is not None:
            before.ss_flags &= ~1  # SS_ONSTACK describes the moment of the query, not a setting
            _sigaltstack(before)
