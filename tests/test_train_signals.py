"""SIGINT / SIGTERM during ``ifseg-deploy train``: at most the current update is lost, one line says
how to resume, and the resumed run ends with the weights of an uninterrupted one."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint
from safetensors.torch import load_file

from ifseg_deploy.cli.main import main
from ifseg_deploy.train import TrainConfig, Trainer, TrainingAborted, flat_classes, state_path
from ifseg_deploy.train.stopping import REPEAT_WINDOW_S

STEPS = 30  # enough updates that a signal sent while training lands before the end on a fast, quiet machine
#: Weights that get no gradient (key biases): Adam turns float noise into lr-sized steps there.
ZERO_GRAD = ("k_proj.bias", "pos_k_linear.bias")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_signals"))


def _args(ckpt: str, out, *extra: str) -> List[str]:
    return [
        "train",
        "--checkpoint",
        ckpt,
        "--categories",
        "grass, cat",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--max-cells",
        "4",
        "--holdout-size",
        "2",
        "--steps",
        str(STEPS),
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> dict:
    """An uninterrupted run (dropout and drop-path on, the defaults)."""
    out = tmp_path_factory.mktemp("ref") / "ref.safetensors"
    assert main(_args(ckpt, out, "--no-progress")) == 0
    return load_file(str(out))


class Run:
    """A training process whose stderr (progress bars included) is collected as it comes."""

    def __init__(self, cmd: List[str], env=None):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.err = ""
        self.out = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):
            self.err += chunk.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        end = time.time() + timeout
        while True:
            found = re.search(pattern, self.err)
            if found:
                return found
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {pattern!r}:\n{self.err[-3000:]}"
            assert time.time() < end, f"no {pattern!r} in time:\n{self.err[-3000:]}"
            time.sleep(0.02)

    def finish(self, timeout: float = 120) -> int:
        self.out = self.proc.stdout.read()
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def report(self) -> str:
        """The lines that are not progress bars, warnings or torchrun's own logging."""
        lines = [line for line in re.split(r"[\r\n]", self.err) if line.strip()]
        return "\n".join(line for line in lines if not re.match(r"(train|held-out):|warning:|W\d{4}|--device", line))


def _cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "ifseg_deploy", *args]


def _resume_cmd(line: str, launcher: List[str]) -> List[str]:
    """The printed resume command, run with this interpreter (``launcher`` replaces its program part)."""
    words = shlex.split(line.split("resume with: ", 1)[1])
    return launcher + words[words.index("train") :]


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_then_sigint_mid_training_resume_exactly(ckpt, reference, tmp_path):
    out = tmp_path / "run.safetensors"
    state = state_path(str(out))
    run = Run(_cli(*_args(ckpt, out)))
    run.wait_for(rf"train:.*\b[3-9]/{STEPS}\b")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 143
    report = run.report()
    assert len(report.splitlines()) == 1, report
    stopped = re.fullmatch(
        rf"stopped by SIGTERM after update (\d+)/{STEPS}; state saved to (.+); resume with: ifseg-deploy train "
        rf".*--resume",
        report,
    )
    assert stopped, report
    first = int(stopped[1])
    assert 3 <= first < STEPS
    assert stopped[2] == state
    assert torch.load(state, weights_only=True)["step"] == first
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

    run = Run(_resume_cmd(report, _cli()))
    # tqdm skips counts when updates are fast: any count past the first stop and well before the end
    run.wait_for(rf"train:.*\b({'|'.join(str(i) for i in range(first + 1, STEPS - 10))})/{STEPS}\b")
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 130
    second = int(re.search(rf"stopped by SIGINT after update (\d+)/{STEPS}", run.report())[1])
    assert first < second < STEPS
    assert torch.load(state, weights_only=True)["step"] == second

    assert main(_args(ckpt, out, "--no-progress", "--resume")) == 0
    _assert_equal(reference, load_file(str(out)))
    assert not os.path.exists(state)


def test_signal_during_heldout_scoring_keeps_all_updates(ckpt, reference, tmp_path):
    """After the last update the held-out scoring (made long here) is abandoned; the state holds every update."""
    out = tmp_path / "run.safetensors"
    run = Run(_cli(*_args(ckpt, out, "--holdout-size", "4000")))
    run.wait_for(r"held-out:.*\b\d{2,}/4000\b")
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 130
    assert re.fullmatch(
        rf"stopped by SIGINT after update {STEPS}/{STEPS}; state saved to .*; resume with: .*--resume", run.report()
    )
    assert torch.load(state_path(str(out)), weights_only=True)["step"] == STEPS
    assert not out.exists()
    # --holdout-size is not part of the training state: resume scores a smaller set.
    assert main(_args(ckpt, out, "--no-progress", "--resume")) == 0
    _assert_equal(reference, load_file(str(out)))


def test_second_signal_aborts_and_keeps_the_saved_state(ckpt, reference, tmp_path, capsys):
    """A duplicate within the repeat window is ignored; a later second signal aborts at once."""
    out = tmp_path / "run.safetensors"
    cfg = TrainConfig(
        checkpoint=ckpt,
        classes=flat_classes(["grass", "cat"]),
        out=str(out),
        steps=STEPS,
        batch_size=4,
        max_cells=4,
        holdout_size=2,
        progress=False,
        save_every=2,
    )

    def on_step(step: int, loss: float) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # a launcher's forwarded copy: the same request
        if step == 4:  # the stop is agreed at update 4; signal again before its state is written
            time.sleep(REPEAT_WINDOW_S + 0.1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingAborted) as aborted:
        Trainer(cfg).run(on_step)
    assert aborted.value.exit_code == 130
    assert torch.load(state_path(str(out)), weights_only=True)["step"] == 2  # the periodic save, intact
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    assert main(_args(ckpt, out, "--no-progress", "--resume")) == 0
    _assert_equal(reference, load_file(str(out)))


def _torchrun(*args: str) -> List[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ifseg_deploy",
        *args,
    ]


def _close(a: dict, b: dict) -> None:
    """Equal up to float summation order (2 processes average their gradients in another order)."""
    for k in a:
        if not k.endswith(ZERO_GRAD):
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)


def test_torchrun_sigint_stops_every_rank_and_resumes(ckpt, reference, tmp_path):
    """Ctrl-C reaches torchrun, which forwards it to each worker: all stop after the same update,
    rank 0 saves and prints the torchrun command; the resumed run matches one process (dropout on)."""
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = Run(_torchrun(*_args(ckpt, out)), env=env)
    run.wait_for(rf"train:.*\b[2-9]/{STEPS}\b", timeout=180)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() != 0
    lines = [line for line in run.report().splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1, run.err[-3000:]
    stopped = re.fullmatch(
        rf"stopped by SIGINT after update (\d+)/{STEPS}; state saved to .*; "
        r"resume with: torchrun --nproc_per_node 2 -m ifseg_deploy train .*--resume",
        lines[0],
    )
    assert stopped, lines[0]
    assert torch.load(state_path(str(out)), weights_only=True)["step"] == int(stopped[1])
    resumed = subprocess.run(_resume_cmd(lines[0], _torchrun()), capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _close(reference, load_file(str(out)))


def _worker_pid(launcher: int, rank: int, timeout: float = 60) -> int:
    """The pid of torchrun's worker ``rank`` (workers are its children; RANK is in their environment)."""
    end = time.time() + timeout
    while time.time() < end:
        for task in Path(f"/proc/{launcher}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank}")


def test_torchrun_worker_death_rank0_saves_and_names_its_state(ckpt, tmp_path):
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = Run(_torchrun(*_args(ckpt, out)), env=env)
    run.wait_for(rf"train:.*\b[2-9]/{STEPS}\b", timeout=180)
    os.kill(_worker_pid(run.proc.pid, 1), signal.SIGKILL)
    assert run.finish() != 0
    lines = [line for line in run.report().splitlines() if line.startswith("training stopped")]
    assert len(lines) == 1, run.err[-3000:]
    stopped = re.fullmatch(
        rf"training stopped after update (\d+)/{STEPS} \(.+\); state saved to (.+); "
        r"resume with: torchrun --nproc_per_node 2 .*--resume",
        lines[0],
    )
    assert stopped, lines[0]
    assert torch.load(stopped[2], weights_only=True)["step"] == int(stopped[1]) >= 2
