"""Fetch one file into the cache: HTTP(S) with resumption, or a copy from a mirror folder.

Standard library only (``urllib``). The bytes go to a hidden partial file beside the target
(:func:`~ifseg_deploy.hub.cache.partial_path`); a broken connection keeps it, and the next try
asks for the rest with an HTTP ``Range`` request (RFC 9110 section 14). The file is checked
(``check``) before it gets its real name, so a name in the cache always means a complete file.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterator, Optional, Tuple

from tqdm import tqdm

from ..errors import IFSegError
from ..version import __version__
from .cache import partial_path

log = logging.getLogger(__name__)

#: Seconds a connection may stay silent (connect or read) before the try counts as broken off.
TIMEOUT_S = 30.0
#: Tries per call: a connection that breaks off mid-file is resumed this many times in a row.
ATTEMPTS = 4
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FetchError(IFSegError):
    """A download that did not give a usable file: ``reason`` is the short cause; ``kept`` the bytes
    of the partial file kept for the next try (0: nothing left behind)."""

    def __init__(self, reason: str, kept: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.kept = kept


class _BrokenOff(Exception):
    """The transfer stopped before the end; the partial file holds what came."""


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` itself (no lock file to leave behind), so that processes
    started together (``torchrun`` ranks) download each file once. Without ``fcntl`` (Windows) or
    where the file system refuses the lock, no lock is taken."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fetch(source: str, dest: str, check: Callable[[str], Optional[str]]) -> None:
    """Fetch ``source`` (``http(s)://`` URL or a local file) to ``dest``.

    ``check(path)`` returns None for a good file or a short reason; a file that fails it is removed.

    Raises:
        FetchError: the source cannot be reached or read (404, refused connection, HTML page,
            size mismatch, failed check); ``kept`` says how many bytes of a broken-off transfer
            stay in the partial file for the next call to resume.
    """
    part = partial_path(dest)
    if source.startswith(("http://", "https://")):
        _http(source, part, os.path.basename(dest))
    else:
        _copy(source, part)
    problem = check(part)
    if problem:
        _remove(part)
        raise FetchError(f"{problem}; removed it")
    try:
        os.replace(part, dest)
    except OSError as e:
        _remove(part)
        raise FetchError(f"cannot write {dest}: {e.strerror}") from None


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else 0


def _copy(source: str, part: str) -> None:
    if not os.path.isfile(source):
        raise FetchError("the mirror folder has no such file")
    try:
        shutil.copyfile(source, part)
    except OSError as e:
        _remove(part)
        raise FetchError(f"cannot copy it: {e.strerror}") from None


def _request(url: str, start: int) -> urllib.request.Request:
    """A GET of ``url`` from byte ``start``; credentials written in the URL become a Basic header
    (``urllib`` does not read them from the URL itself)."""
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": f"ifseg-deploy/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return urllib.request.Request(url, headers=headers)


def _http(url: str, part: str, label: str) -> None:
    for attempt in range(ATTEMPTS):
        try:
            _http_once(url, part, label)
            return
        except _BrokenOff as e:
            reason = str(e)
        if attempt + 1 < ATTEMPTS:
            time.sleep(0.25 * (attempt + 1))  # a short pause before resuming: the server may be restarting
    raise FetchError(f"the connection broke off {ATTEMPTS} times, last: {reason}", kept=_size(part))


def _content_range(value: Optional[str]) -> Tuple[int, Optional[int]]:
    """``(first byte, total size or None)`` of a ``Content-Range: bytes a-b/n`` header."""
    found = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not found:
        raise FetchError(f"the server's partial answer has no valid Content-Range ({value!r})")
    return int(found.group(1)), None if found.group(3) == "*" else int(found.group(3))


def _http_once(url: str, part: str, label: str) -> None:
    start = _size(part)
    try:
        resp = urllib.request.urlopen(_request(url, start), timeout=TIMEOUT_S)  # follows redirects
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and start:  # the partial cannot be continued (the file changed or is shorter): restart
            _remove(part)
            raise _BrokenOff("the partial file did not match the server's file") from None
        _remove(part)
        raise FetchError(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        if start:  # the server went away while resuming: keep what came for the next call
            raise _BrokenOff(str(getattr(e, "reason", e))) from None
        raise FetchError(f"cannot connect: {getattr(e, 'reason', e)}") from None
    with resp:
        if "text/html" in resp.headers.get("Content-Type", "").lower():
            _remove(part)
            raise FetchError("the server answered with an HTML page, not the file (an error or login page?)")
        length = resp.headers.get("Content-Length", "")
        length = int(length) if length.isdigit() else None
        if resp.status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first != start:
                _remove(part)
                raise _BrokenOff(f"the server resumed at byte {first}, not {start}")
            if total is None and length is not None:
                total = start + length
        else:  # a full answer (the server may ignore Range): start over
            start, total = 0, length
        _receive(resp, part, start, total, label)


def _receive(resp, part: str, start: int, total: Optional[int], label: str) -> None:
    """Write the body of ``resp`` to ``part`` from byte ``start``; checks the size against ``total``."""
    written = start
    show = sys.stderr.isatty()
    if not show:
        log.info("downloading %s (%s bytes)", label, total if total is not None else "unknown")
    try:
        with (
            open(part, "ab" if start else "wb") as fh,
            tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not show
            ) as bar,
        ):
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.HTTPException, OSError) as e:  # IncompleteRead, reset, timeout
                    raise _BrokenOff(f"{type(e).__name__} after {written} bytes") from None
                if not chunk:
                    break
                if written == 0 and chunk[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")):
                    raise FetchError("the server answered with an HTML page, not the file (an error or login page?)")
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except FetchError:
        _remove(part)
        raise
    except OSError as e:  # writing: disk full, quota; what is written stays for the next try
        raise FetchError(f"cannot write {part}: {e.strerror}", kept=_size(part)) from None
    if total is not None and written < total:
        raise _BrokenOff(f"{written} of {total} bytes")
    if total is not None and written > total:
        _remove(part)
        raise FetchError(f"the server sent {written} bytes, more than the {total} it announced")
