"""A local Triton Inference Server for trials and tests: the ``tritonserver`` binary bundled in the
``nvidia-pytriton`` wheel (CPU, Python backend only), serving a repository written by
``ifseg-deploy export --format triton`` on 127.0.0.1.

    python -m ifseg_deploy.triton.local_server REPO [--http-port 8000] [--grpc-port 8001]

The wheel's server folder is copied once into a cache folder (``$IFSEG_CACHE``, default
``~/.cache/ifseg-deploy``) with the Python stub of this interpreter's version in
``backends/python/``. The stub runs ``model.py`` with this interpreter's libraries: its
``sys.path`` is passed as ``PYTHONPATH`` (the repository's ``model.py`` adds it back, as the
bundled stub starts an isolated interpreter). The stub reads tensors through NumPy's 1.x ABI, so
where this environment has NumPy 2 a NumPy 1.x copy is installed once into the cache
(``pip install --target``) and put first on that path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from typing import List, Optional, Sequence

from ..errors import IFSegError

READY_TIMEOUT_S = 120.0
#: Log lines of a server without a GPU that say nothing about the repository.
NOISE = ("CudaDriverHelper", "NVML", "pinned memory", "DCGM", "CUDA driver")


def cache_dir() -> str:
    """Where the server copy and the NumPy 1.x folder live."""
    return os.environ.get("IFSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ifseg-deploy")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pytriton_paths():
    try:
        import pytriton
    except ImportError:
        raise IFSegError(
            "a local Triton server needs the nvidia-pytriton wheel (Linux x86_64 / aarch64, Python 3.8-3.12): "
            "pip install --no-deps nvidia-pytriton"
        ) from None
    base = os.path.dirname(pytriton.__file__)
    return os.path.join(base, "tritonserver"), os.path.join(os.path.dirname(base), "nvidia_pytriton.libs")


def server_folder() -> str:
    """The cached copy of the bundled server with this Python's stub in ``backends/python/``."""
    import importlib.metadata

    src, _ = _pytriton_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = os.path.join(src, "python_backend_stubs", version, "triton_python_backend_stub")
    if not os.path.isfile(stub):
        raise IFSegError(f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.10-3.12")
    dst = os.path.join(cache_dir(), f"tritonserver-{importlib.metadata.version('nvidia-pytriton')}-py{version}")
    if not os.path.isfile(os.path.join(dst, "backends", "python", "triton_python_backend_stub")):
        tmp = f"{dst}.{os.getpid()}.tmp"
        shutil.copytree(src, tmp, symlinks=True, ignore=shutil.ignore_patterns("python_backend_stubs", "caches"))
        shutil.copy2(stub, os.path.join(tmp, "backends", "python"))
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    return dst


def stub_numpy_dir() -> Optional[str]:
    """A folder holding NumPy 1.x for the stub, or None when this environment's NumPy is 1.x."""
    import numpy

    if int(numpy.__version__.split(".")[0]) < 2:
        return None
    folder = os.path.join(cache_dir(), "stub-numpy1")
    if not os.path.isdir(os.path.join(folder, "numpy")):
        tmp = f"{folder}.{os.getpid()}.tmp"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            tmp,
            "numpy<2",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise IFSegError(
                f"cannot install NumPy 1.x for the Triton Python stub "
                f"({(done.stderr.strip().splitlines() or ['pip failed'])[-1]}); "
                f"run: {' '.join(cmd[:-2])} {folder} 'numpy<2'"
            )
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    return folder


class LocalTritonServer:
    """``tritonserver`` on 127.0.0.1 serving ``repository``; a context manager that always stops it.

    Ports default to free ones. ``model_control`` ``explicit`` + ``models`` loads only those.
    Raises :class:`IFSegError` with the server's last log line when it exits or is not ready
    within ``ready_timeout`` seconds.
    """

    def __init__(
        self,
        repository: str,
        http_port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        log_path: Optional[str] = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = READY_TIMEOUT_S,
    ):
        if not os.path.isdir(repository):
            raise IFSegError(f"model repository not found: {repository}")
        self.repository = os.path.abspath(repository)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.log_path = log_path or os.path.join(
            os.path.dirname(self.repository), f".tritonserver-{self.http_port}.log"
        )
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.process: Optional[subprocess.Popen] = None
        self.shm_prefix = f"ifseg_triton_{os.getpid()}_{self.http_port}_"  # the Python backend's shared-memory regions

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> List[str]:
        folder = server_folder()
        return [
            os.path.join(folder, "bin", "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={os.path.join(folder, 'backends')}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--log-info=false",
            "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.extra_args,
        ]

    def environment(self) -> dict:
        """This process's environment plus what the bundled server and its Python stub need."""
        _, libs = _pytriton_paths()
        env = dict(os.environ)
        paths = [p for p in [stub_numpy_dir()] + sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in paths)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in [sysconfig.get_config_var("LIBDIR"), libs, env.get("LD_LIBRARY_PATH")] if p
        )
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        return env

    def start(self) -> "LocalTritonServer":
        cmd, env = self.command(), self.environment()
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise IFSegError(f"tritonserver exited ({self.last_error()}); full log: {self.log_path}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise IFSegError(
            f"tritonserver not ready after {self.ready_timeout:.0f} s ({self.last_error()}); full log: {self.log_path}"
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def last_error(self) -> str:
        """The most telling line of the server log (its last error, else its last line)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                lines = [line.strip() for line in fh if line.strip()]
        except OSError:
            return "no log"
        lines = [line for line in lines if not any(n in line for n in NOISE)]
        errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
        return ((errors or lines or ["no output"])[-1])[:300]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful unload), SIGKILL after ``timeout`` seconds; the Python stubs go with it."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (a crash, for tests)."""
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # stubs outliving a killed server
            os.killpg(self.process.pid, signal.SIGKILL)
        shm = "/dev/shm"
        for name in os.listdir(shm) if os.path.isdir(shm) else []:
            if name.startswith(self.shm_prefix):  # left behind when the server was killed
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(shm, name))

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ifseg_deploy.triton.local_server",
        description="Serve a repository written by ifseg-deploy export --format triton on 127.0.0.1 (CPU).",
    )
    p.add_argument("repository")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    args = p.parse_args(argv)
    try:
        server = LocalTritonServer(
            args.repository,
            args.http_port,
            args.grpc_port,
            log_path=os.path.join(os.path.dirname(os.path.abspath(args.repository)), "tritonserver.log"),
        )
        server.start()
    except IFSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"Serving {args.repository}: {server.grpc_url} and {server.http_url} (log: {server.log_path}); Ctrl-C stops",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on kill as on Ctrl-C
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
