"""A process that used OpenVINO still handles Ctrl-C / SIGTERM: OpenVINO's CPU plugin swaps the
thread's alternate signal stack, and two plugin instances ending in creation order leave it freed
(the next handled signal is a SIGSEGV). Each case runs in a fresh process, as a user's would."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")

PRELUDE = textwrap.dedent(
    """
    import os, signal
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    from ifseg_deploy.runtime import openvino_core

    def compiled(core):
        x = ops.parameter([1, 64], np.float32)
        y = ops.relu(ops.matmul(x, ops.constant(np.ones((64, 64), np.float32)), False, False))
        return core.compile_model(ov.Model([y], [x]), "CPU")
    """
)
EPILOGUE = textwrap.dedent(
    """
    got = []
    signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    os.kill(os.getpid(), signal.SIGTERM)
    assert got == [signal.SIGTERM], got
    print("handled")
    """
)


def _run(body: str) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body) + EPILOGUE
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=120
    )


def test_shared_core_models_dropped_in_creation_order():
    run = _run(
        """
        first, second = compiled(openvino_core.core()), compiled(openvino_core.core())
        del first
        del second
        """
    )
    assert run.returncode == 0 and run.stdout.strip() == "handled", (run.returncode, run.stderr[-2000:])


def test_kept_signal_stack_survives_cores_of_their_own():
    """The pattern of NNCF's engines: each makes its own Core, and they end in creation order."""
    run = _run(
        """
        before = openvino_core.signal_stack()
        with openvino_core.keep_signal_stack():
            first, second = compiled(ov.Core()), compiled(ov.Core())
            del first
        del second
        assert openvino_core.signal_stack() == before, (openvino_core.signal_stack(), before)
        """
    )
    assert run.returncode == 0 and run.stdout.strip() == "handled", (run.returncode, run.stderr[-2000:])
