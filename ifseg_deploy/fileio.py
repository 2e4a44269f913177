"""Where and how every command writes: one output policy, and the listing of image folders.

* A file is written under a hidden temporary name in its folder and renamed into place
  (:func:`atomic_path`), so no reader ever sees half a file and a stopped run leaves none at the
  final name.
* An existing file is replaced only by output of the same kind, recognised by its leading bytes
  (an ONNX model by an ONNX export, a PNG by a PNG, ...) or, for kinds without a signature, by its
  name; anything else there is refused (:func:`check_output_file`).
* A folder the project creates carries a marker file (:data:`MARKER`). Results go into a folder
  (:class:`ResultFolder`) that is new, empty or marked; a folder holding other files is refused
  unless ``exist_ok``, and then no file in it is ever replaced. A model folder (OpenVINO IR, Triton
  repository) is replaced (:func:`atomic_folder`) only when it holds nothing but the files its
  marker lists.
* Nothing outside the final output path is ever removed; every check runs before any work, and an
  OS error at write time is one line naming the file and the cause.

``option`` (of the checks and :class:`ResultFolder`) is the caller's parameter that holds the path
(``out``, ``save_labels``): messages say ``out=PATH`` and the CLI shows its flag (``--out PATH``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .errors import IFSegError

log = logging.getLogger(__name__)

#: File endings treated as images when a folder is listed.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The marker file in every folder the project creates: JSON naming the writer, the folder's kind
#: and, for model folders, the files it holds.
MARKER = ".ifseg-deploy"


@dataclass(frozen=True)
class Kind:
    """A kind of output file: what it is called in messages and how an existing one is recognised."""

    description: str
    signature: Optional[Callable[[bytes], bool]] = None  # on the first bytes; None: recognised by name
    suffixes: Tuple[str, ...] = ()


def _json_text(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")


#: Every kind of file the project writes, by name.
KINDS: Dict[str, Kind] = {
    "onnx": Kind("an ONNX model", lambda b: b[:1] == b"\x08", (".onnx",)),
    "safetensors": Kind("a safetensors file", lambda b: len(b) > 8 and b[8:9] == b"{", (".safetensors",)),
    "torch": Kind("a PyTorch state file", lambda b: b[:4] == b"PK\x03\x04", (".pt", ".pth")),
    "png": Kind("a PNG image", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n", (".png",)),
    "npy": Kind("a NumPy .npy array", lambda b: b[:6] == b"\x93NUMPY", (".npy",)),
    "mp4": Kind("an MP4 video", lambda b: b[4:8] == b"ftyp", (".mp4", ".mov", ".m4v")),
    "avi": Kind("an AVI video", lambda b: b[:4] == b"RIFF" and b[8:12] == b"AVI ", (".avi",)),
    "mcap": Kind("an MCAP file", lambda b: b[:8] == b"\x89MCAP0\r\n", (".mcap",)),
    "mkv": Kind("a Matroska video", lambda b: b[:4] == b"\x1a\x45\xdf\xa3", (".mkv", ".webm")),
    "json": Kind("a JSON file", _json_text, (".json",)),
    "jsonl": Kind("a JSON Lines file", _json_text, (".jsonl", ".ndjson")),
    "engine": Kind("a TensorRT engine", None, (".engine", ".plan", ".trt")),
    "cache": Kind("a TensorRT timing cache", None, (".cache",)),
    "text": Kind("a text file", None, (".txt", ".md", ".sh", ".pbtxt", ".csv")),
}


def kind_of(path: str) -> Optional[str]:
    """The kind (a key of :data:`KINDS`) a file name announces by its ending, or None."""
    name = path.lower()
    for key, kind in KINDS.items():
        if name.endswith(kind.suffixes):
            return key
    return None


def _same_kind(path: str, kind: Optional[str]) -> Optional[str]:
    """None when the existing file ``path`` may be replaced by output of ``kind``, else why not."""
    if not os.path.isfile(path):
        return "is not a regular file"
    if kind is None or os.path.getsize(path) == 0:
        return None
    spec = KINDS[kind]
    if spec.signature is None:
        return None if path.lower().endswith(spec.suffixes) else f"is not {spec.description} (by its name)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    return None if spec.signature(head) else f"is not {spec.description}"


def _creatable(folder: str) -> str:
    """The nearest existing ancestor of ``folder`` if it is a writable folder, else raise."""
    probe = os.path.abspath(folder)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise IFSegError(f"{probe} is a file, not a folder")
    try:  # a real file, not os.access: root passes every permission check, yet read-only mounts refuse it
        fd, tmp = tempfile.mkstemp(prefix=".ifseg-deploy-probe.", dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise IFSegError(f"{probe} is not writable: {e.strerror}") from None
    return probe


def check_output_file(path: str, option: str = "path", kind: Optional[str] = None, size_hint: int = 0) -> str:
    """Check, before any work and without leaving anything behind, that ``path`` can receive a file
    of ``kind`` (a key of :data:`KINDS`; default: the kind its ending announces) of about
    ``size_hint`` bytes; returns ``path``.

    Raises:
        IFSegError: ``path`` is (or ends like) a folder, its folder cannot be created or written,
            its disk has less than ``size_hint`` bytes free, or a file there is of another kind
            (the project never replaces what it did not write).
    """
    kind = _check_target(path, option, kind)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        existing = _creatable(folder)
    except IFSegError as e:
        raise IFSegError(f"{option}={path}: cannot write there ({e}); choose another `{option}`") from None
    free = shutil.disk_usage(existing).free
    if free < size_hint:
        raise IFSegError(
            f"{option}={path}: needs about {size_hint / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free there; "
            f"free some space or choose another `{option}`"
        )
    return path


def _check_target(path: str, option: str, kind: Optional[str]) -> Optional[str]:
    """The checks of the target itself (not a folder; an existing file of the same kind); returns the kind."""
    kind = kind or kind_of(path)
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        hint = f" such as {os.path.join(path, 'out' + KINDS[kind].suffixes[0])}" if kind else ""
        raise IFSegError(f"{option}={path} is a folder; give a file name{hint}")
    if os.path.lexists(path):
        why = _same_kind(path, kind)
        if why:
            raise IFSegError(
                f"{option}={path} exists and {why}; ifseg-deploy replaces only its own kind of output: "
                f"choose another `{option}` or move the file away"
            )
    return kind


def _write_error(path: str, e: OSError) -> IFSegError:
    cause = e.strerror or str(e)
    return IFSegError(f"cannot write {path} ({cause}); free some space or choose another output path")


def _apply_umask(path: str, mode: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)  # mkstemp / mkdtemp create private entries; outputs are ordinary ones


@contextlib.contextmanager
def atomic_path(path: str, kind: Optional[str] = None, option: str = "path") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The target is checked first and again before the rename (not a folder; an existing file only
    of the same ``kind``, a key of :data:`KINDS`, default from the file ending). On any error the
    temporary file is removed and ``path`` is left as it was. OS errors (disk full, file-size
    limit, permissions) become one-line :class:`IFSegError` naming the file.
    """
    _check_target(path, option, kind)  # the temporary file below is the writability check: no probe per file
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        yield tmp
        _apply_umask(tmp, 0o666)
        _check_target(path, option, kind)  # the target may have changed while we worked
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise _write_error(path, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_bytes(path: str, data: bytes, kind: Optional[str] = None) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path, kind) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_png(path: str, image) -> None:
    """Write a uint8/uint16 array (gray ``(H, W)`` or RGB ``(H, W, 3)``) as PNG, atomically."""
    import cv2
    import numpy as np

    arr = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise IFSegError(f"could not encode {path} as PNG")
    write_bytes(path, buf.tobytes(), "png")


def write_npy(path: str, array) -> None:
    """Write a NumPy array as ``.npy``, atomically."""
    import numpy as np

    with atomic_path(path, "npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


# -- folders -------------------------------------------------------------------------------------


def read_marker(folder: str) -> Optional[dict]:
    """The marker of a folder the project wrote, or None (no marker, or not one of ours)."""
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("written_by") == "ifseg-deploy" else None


def _marker_bytes(kind: str, files: Optional[List[str]] = None) -> bytes:
    from .version import __version__

    marker = {"written_by": "ifseg-deploy", "version": __version__, "kind": kind}
    if files is not None:
        marker["files"] = files
    return (json.dumps(marker, indent=2) + "\n").encode()


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class ResultFolder:
    """A folder that receives result files (segment's run folders, stream's ``save_labels``, reports).

    It is created when the first file is written (no empty folders), with the marker. ``numbered``:
    ``path`` is a base name (``runs/segment``) and the folder is the first free one of ``path``,
    ``path2``, ``path3``, ... claimed by an exclusive ``mkdir``, so concurrent runs never share one.
    An existing folder is used when it is empty or marked; one holding other files only with
    ``exist_ok``, and then no existing file in it is replaced.

    Raises:
        IFSegError: (at construction) ``path`` is a file, cannot be created, or holds files the
            project did not write and ``exist_ok`` is off.
    """

    def __init__(
        self, path: str, option: str = "path", exist_ok: bool = False, numbered: bool = False, kind: str = "results"
    ):
        self.option, self.kind = option, kind
        self.numbered = numbered and not exist_ok
        self.path = path
        self.owned = False  # the folder is marked: every file in it was written by the project
        self._ready = False
        if os.path.lexists(path) and not os.path.isdir(path):
            raise IFSegError(f"{option}={path} is a file, not a folder; choose a folder name")
        try:
            _creatable(path)
        except IFSegError as e:
            raise IFSegError(f"{option}={path}: cannot write there ({e}); choose another `{option}`") from None
        if os.path.isdir(path) and not self.numbered:
            self.owned = read_marker(path) is not None
            if not self.owned and _entries(path) and not exist_ok:
                raise IFSegError(
                    f"{option}={path} already holds files ifseg-deploy did not write; choose a new or empty folder, "
                    "or pass exist_ok=True to add results beside them (no existing file is replaced)"
                )

    def create(self) -> str:
        """Create the folder now (marked when new or empty) and return its path."""
        if self._ready:
            return self.path
        try:
            if self.numbered:
                self.path = _claim_numbered(self.path)
                self._mark()
            else:
                os.makedirs(self.path, exist_ok=True)
                if not self.owned and not _entries(self.path):
                    self._mark()
        except OSError as e:
            raise _write_error(self.path, e) from None
        self._ready = True
        return self.path

    def _mark(self) -> None:
        write_bytes(os.path.join(self.path, MARKER), _marker_bytes(self.kind))
        self.owned = True

    def file(self, name: str) -> str:
        """The path for result ``name`` (may hold sub-folders) inside the folder, creating what is
        needed. Raises :class:`IFSegError` when a file the project did not write is already there."""
        rel = os.path.normpath(name)
        if os.path.isabs(rel) or rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise IFSegError(f"result name {name} leaves the output folder {self.path}")
        path = os.path.join(self.create(), rel)
        if os.path.lexists(path) and not self.owned:
            raise IFSegError(f"{path} already exists and was not written by ifseg-deploy; it is left as it is")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as e:
            raise _write_error(path, e) from None
        return path


def _entries(folder: str) -> List[str]:
    try:
        return os.listdir(folder)
    except OSError as e:
        raise IFSegError(f"cannot read folder {folder} ({e.strerror})") from None


def _claim_numbered(base: str) -> str:
    """Create and return the first free folder of ``base``, ``base2``, ``base3``, ... (exclusive mkdir)."""
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    n = 1
    while True:
        path = base if n == 1 else f"{base}{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def _listed_only(folder: str, marker: Optional[dict], kind: str) -> bool:
    """True when ``folder`` is a model folder of ``kind`` holding only the files its marker lists."""
    if marker is None or marker.get("kind") != kind or not isinstance(marker.get("files"), list):
        return False
    listed = set(marker["files"]) | {MARKER}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel not in listed:
                return False
    return True


def check_output_folder(folder: str, option: str, kind: str) -> str:
    """Check before any work that the model folder ``folder`` of ``kind`` (``"openvino"``,
    ``"triton"``) can be written: new, empty, or a folder of that kind holding only the files its
    marker lists. Returns the resolved path (a symlink is followed: the folder it points to is written).

    Raises:
        IFSegError: a file is there, the folder holds anything else, it is the current folder or one
            above it, or its parent cannot be written.
    """
    target = os.path.realpath(os.path.abspath(folder))
    if _inside(os.getcwd(), target):
        raise IFSegError(f"{option}={folder} is the current folder or one above it; choose a new folder name")
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise IFSegError(f"{option}={folder} is a file, not a folder; choose a folder name")
        if _entries(target) and not _listed_only(target, read_marker(target), kind):
            raise IFSegError(
                f"{option}={folder} already holds files that are not an ifseg-deploy {kind} export "
                "(it is replaced only when it holds nothing else); choose a new or empty folder"
            )
    try:
        _creatable(os.path.dirname(target))
    except IFSegError as e:
        raise IFSegError(f"{option}={folder}: cannot write there ({e}); choose another `{option}`") from None
    return target


@contextlib.contextmanager
def atomic_folder(folder: str, option: str, kind: str) -> Iterator[str]:
    """Yield a temporary folder beside ``folder``; on success it replaces ``folder`` in one rename.

    :func:`check_output_folder` runs before and again at the end. The marker listing every file is
    written last. The previous folder (only the files its marker lists) is removed after the
    rename; anything that appeared in it meanwhile is kept and named in a warning.
    """
    target = check_output_folder(folder, option, kind)
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=parent)
        _apply_umask(stage, 0o777)
    except OSError as e:
        raise _write_error(target, e) from None
    try:
        yield stage
        files = sorted(os.path.relpath(os.path.join(r, n), stage) for r, ds, fs in os.walk(stage) for n in ds + fs)
        write_bytes(os.path.join(stage, MARKER), _marker_bytes(kind, files))
        check_output_folder(folder, option, kind)
        old = None
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=parent)
            os.replace(target, os.path.join(old, "previous"))
        os.replace(stage, target)
        if old:
            _remove_listed(os.path.join(old, "previous"), kind)
            with contextlib.suppress(OSError):
                os.rmdir(old)
    except OSError as e:
        raise _write_error(target, e) from None
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)  # our own temporary folder


def _remove_listed(folder: str, kind: str) -> None:
    """Remove the files a model folder's marker lists, then the folder if nothing else is left."""
    marker = read_marker(folder) or {}
    listed = sorted(set(marker.get("files", [])) | {MARKER}, key=lambda p: -p.count(os.sep))
    for rel in listed:
        path = os.path.join(folder, rel)
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)  # only once empty: a file added meanwhile keeps its folder
            else:
                os.remove(path)
    try:
        os.rmdir(folder)
    except OSError:
        log.warning(f"files added to the previous {kind} export while it was replaced were kept in {folder}")


def list_images(folder: str) -> List[str]:
    """Paths of the image files directly inside ``folder`` (by ending, case-insensitive), sorted."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))
