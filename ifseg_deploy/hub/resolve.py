"""Model names and missing BPE files -> local files, downloaded once into the cache.

Every file comes from its official location (:mod:`.names`) unless ``IFSEG_MIRROR`` names
another place: an ``http(s)://`` URL or a folder (``file://`` URLs too) holding the files under
the same names, side by side (``ofa_tiny.pt``, ``encoder.json``, ...). ``IFSEG_OFFLINE=1`` (or
:func:`offline_mode`, the CLI's ``--offline``) never touches the network: only the cache and a
mirror folder serve.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import urllib.parse
import urllib.request
from typing import Callable, Iterator, Optional

from ..errors import IFSegError
from ..redact import redact_url
from ..text.tokenizer import BPE_FILES, find_bpe_dir
from .cache import bpe_path, model_path
from .download import FetchError, fetch, folder_lock
from .names import BPE_SHA256, MODELS, OFA_BPE

ENV_MIRROR = "IFSEG_MIRROR"
ENV_OFFLINE = "IFSEG_OFFLINE"
_TRUE = ("1", "true", "yes", "on")

_offline: Optional[bool] = None  # set by offline_mode() for the duration of a CLI command


@contextlib.contextmanager
def offline_mode(offline: bool) -> Iterator[None]:
    """Within the block, ``offline=True`` applies wherever no ``offline`` argument is given (the
    CLI's ``--offline`` for one command, BPE look-ups deep in the runtime included); ``False``
    leaves ``IFSEG_OFFLINE`` in charge."""
    global _offline
    before = _offline
    _offline = True if offline else before
    try:
        yield
    finally:
        _offline = before


def _offline_reason(offline: Optional[bool]) -> Optional[str]:
    """How the network was forbidden (as the message names it), or None when it is allowed."""
    if offline or (offline is None and _offline):
        return "offline=True"
    if offline is None and os.environ.get(ENV_OFFLINE, "").strip().lower() in _TRUE:
        return f"{ENV_OFFLINE}=1"
    return None


def source_of(filename: str, official: Optional[str]) -> Optional[str]:
    """Where ``filename`` is fetched from: the ``IFSEG_MIRROR`` URL or folder with that file name,
    else ``official`` (None: no automatic download). Raises :class:`IFSegError` for a mirror that is
    neither an ``http(s)://`` URL nor an existing folder."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return official
    if mirror.startswith(("http://", "https://")):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
    folder = urllib.request.url2pathname(urllib.parse.urlsplit(mirror).path) if mirror.startswith("file://") else mirror
    if not os.path.isdir(folder):
        raise IFSegError(
            f"{ENV_MIRROR}={redact_url(mirror)} is neither an http(s):// URL nor an existing folder; point it at "
            "the place that holds the model files under their official names"
        )
    return os.path.join(os.path.abspath(folder), filename)


def ensure_file(
    filename: str,
    official: Optional[str],
    dest: str,
    check: Callable[[str], Optional[str]],
    subject: str,
    offline: Optional[bool] = None,
    manual: Optional[str] = None,
) -> str:
    """``dest`` if it exists, else the file fetched there from :func:`source_of` and checked.

    Args:
        filename: the official file name (also its name on a mirror).
        official: its official URL (None: by hand only, from ``manual``).
        dest: its place in the cache.
        check: ``check(path)`` -> None for a good file, else a short reason (the file is then removed).
        subject: what the caller was asked for, naming its parameter (``checkpoint='ofa-tiny'``); every
            message starts with it.
        offline: True: never use the network (a mirror folder still serves); None: ``offline_mode`` /
            ``IFSEG_OFFLINE``.

    Raises:
        IFSegError: one line starting with ``subject``, the URL tried and where to put the file by hand.
            Nothing is left in the cache, except the received part of a transfer that broke off
            (hidden, resumed by the next call).
    """
    if os.path.isfile(dest):
        return dest
    source = source_of(filename, official)
    if source is None:
        raise IFSegError(
            f"{subject}: {filename} cannot be downloaded automatically; download it by hand from "
            f"{manual} and put it at {dest} (or on the folder or server of {ENV_MIRROR})"
        )
    shown = redact_url(source)
    reason = _offline_reason(offline)
    if reason and source.startswith(("http://", "https://")):  # a mirror folder is no download
        raise IFSegError(
            f"{subject}: {filename} is not in the cache and {reason} forbids downloads; download "
            f"{shown} by hand and put it at {dest}"
        )
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
    except OSError as e:
        raise IFSegError(
            f"{subject}: cannot create the cache folder {os.path.dirname(dest)} ({e.strerror}); "
            "set IFSEG_CACHE to a writable folder"
        ) from None
    with folder_lock(os.path.dirname(dest)):
        if os.path.isfile(dest):  # another process fetched it while this one waited
            return dest
        try:
            fetch(source, dest, check)
        except FetchError as e:
            kept = f"; the {e.kept / 1e6:.1f} MB received are kept and the next try resumes" if e.kept else ""
            raise IFSegError(
                f"{subject}: cannot download {shown} ({redact_url(e.reason)}){kept}; try again, or "
                f"download it by hand and put it at {dest}"
            ) from None
    return dest


def checkpoint_problem(path: str) -> Optional[str]:
    """None if ``path`` loads safely as an OFA / IFSeg checkpoint whose architecture can be read
    (:func:`~ifseg_deploy.checkpoint.safe_load.load_pickled_checkpoint`, then the layout's
    :func:`~ifseg_deploy.checkpoint.fairseq_layout.infer_arch`), else the first clause of why not."""
    from ..checkpoint import fairseq_layout  # PyTorch loads only when a download is checked
    from ..checkpoint.fairseq_config import read_settings
    from ..checkpoint.safe_load import load_pickled_checkpoint

    try:
        ckpt = load_pickled_checkpoint(path)
        weights = fairseq_layout.model_weights(ckpt, "model", path)
        fairseq_layout.infer_arch(weights, read_settings(ckpt), path)
    except IFSegError as e:
        return str(e).replace(path, "the file").split(";")[0]
    except Exception as e:  # odd contents can upset the layout reader in many ways: still a clear refusal
        return f"the file is not an OFA/IFSeg checkpoint ({type(e).__name__})"
    return None


def _sha256_problem(name: str) -> Callable[[str], Optional[str]]:
    def check(path: str) -> Optional[str]:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != BPE_SHA256[name]:
            return f"its SHA-256 is not that of OFA's utils/BPE/{name}"
        return None

    return check


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or bool(os.path.splitext(text)[1]) or text.startswith((".", "~"))


def resolve_checkpoint(checkpoint: str, offline: Optional[bool] = None) -> str:
    """The local file of ``checkpoint``: an existing path as it is; a model name (:data:`MODELS`:
    ``ofa-tiny`` ... ``ofa-huge``, ``ifseg-web-demo``) as its file in the cache, downloaded
    there first if needed and checked (:func:`checkpoint_problem`) before it gets its name. Any
    other path is returned unchanged (the loader reports it missing).

    Args:
        checkpoint: a path or a model name.
        offline: True: never download; None: :func:`offline_mode` / ``IFSEG_OFFLINE``.

    Raises:
        IFSegError: an unknown name (with the closest names), or a download that cannot be made
            (one line: the URL tried, where to put the file by hand).
    """
    if not isinstance(checkpoint, str) or os.path.exists(checkpoint):
        return checkpoint
    model = MODELS.get(checkpoint)
    if model is None:
        if _looks_like_path(checkpoint):
            return checkpoint
        close = difflib.get_close_matches(checkpoint, list(MODELS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise IFSegError(
            f"checkpoint='{checkpoint}': no such file, and no model of that name; {hint}names: {', '.join(MODELS)}"
        )
    return ensure_file(
        model.filename,
        model.url,
        model_path(model),
        checkpoint_problem,
        f"checkpoint='{checkpoint}'",
        offline,
        model.manual,
    )


def bpe_folder(bpe_dir: Optional[str], checkpoint: Optional[str], offline: Optional[bool] = None) -> str:
    """The folder of ``encoder.json``, ``vocab.bpe`` and ``dict.txt``: ``bpe_dir``, else beside
    ``checkpoint`` (:func:`~ifseg_deploy.text.tokenizer.find_bpe_dir`), else the cache's ``bpe/``
    folder, the files fetched from OFA's ``utils/BPE`` (or ``IFSEG_MIRROR``) when missing and
    checked against their SHA-256.

    Raises:
        IFSegError: ``bpe_dir`` lacks a file, or a file cannot be downloaded (one line naming
            ``bpe_dir``, the URL and where to put the file by hand).
    """
    try:
        return find_bpe_dir(bpe_dir, checkpoint)
    except IFSegError:
        if bpe_dir:
            raise
    folder = bpe_path()
    subject = f"no `bpe_dir` given and no BPE files beside {checkpoint or 'the model'}"
    missing = [name for name in BPE_FILES if not os.path.isfile(os.path.join(folder, name))]
    sources = [source_of(name, OFA_BPE + name) for name in missing]
    reason = _offline_reason(offline)
    if reason and len(missing) > 1 and all(s.startswith(("http://", "https://")) for s in sources):
        # All the files at once: an air-gapped user fetches them in one trip, not one per run.
        base = redact_url(sources[0])[: -len(urllib.parse.quote(missing[0]))]
        raise IFSegError(
            f"{subject}: {', '.join(missing)} are not in the cache and {reason} forbids downloads; download them "
            f"from {base} by hand and put them in {folder}"
        )
    for name in BPE_FILES:
        ensure_file(name, OFA_BPE + name, os.path.join(folder, name), _sha256_problem(name), subject, offline)
    return folder
