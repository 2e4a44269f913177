"""The CUDA-only policies of the PyTorch backend, checked on any machine: the TF32 switches (readable
and settable on CPU-only builds) and the bookkeeping of CUDA-graph replay with a stand-in graph."""

from __future__ import annotations

import pytest
import torch
from conftest import SMALL_ARCH, make_tiny_model

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.runtime.torch_backend import TorchBackend, tf32_policy, tf32_switches


def tf32_values():
    return tuple(read() for read, _, _, _ in tf32_switches())


def inputs(arch, size=(64, 80), classes=3, prompt_len=5, batch=1):
    gen = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, 3, *size, generator=gen),
        torch.randn(1, prompt_len, arch.embed_dim, generator=gen),
        torch.randn(classes, arch.embed_dim, generator=gen),
    )


@pytest.mark.parametrize("allow", [False, True])
def test_tf32_policy_applies_and_restores(allow):
    before = tf32_values()
    with tf32_policy(allow):
        inside = tf32_values()
    assert inside == tuple((on if allow else off) for _, _, on, off in tf32_switches())
    assert tf32_values() == before
    with pytest.raises(RuntimeError), tf32_policy(allow):
        raise RuntimeError("restored on errors too")
    assert tf32_values() == before
    with tf32_policy(None):
        assert tf32_values() == before


def test_fp32_forward_runs_with_tf32_off(monkeypatch):
    """The user's process-wide TF32 choice is kept outside the forward pass and overridden inside it."""
    backend = TorchBackend(make_tiny_model(0, SMALL_ARCH))
    seen = []
    encoder_forward = type(backend.model.encoder).forward

    def recording(self, *args, **kwargs):
        seen.append(tf32_values())
        return encoder_forward(self, *args, **kwargs)

    monkeypatch.setattr(type(backend.model.encoder), "forward", recording)
    switches = tf32_switches()
    user = tuple(on for _, _, on, _ in switches)  # a user who allows TF32 process-wide
    saved = tf32_values()
    try:
        for (_, write, _, _), value in zip(switches, user):
            write(value)
        backend.run(*inputs(SMALL_ARCH))
        assert tf32_values() == user
    finally:
        for (_, write, _, _), value in zip(switches, saved):
            write(value)
    assert seen == [tuple(off for _, _, _, off in switches)]


def test_tf32_needs_cuda():
    with pytest.raises(IFSegError, match=r"^precision=tf32 needs a CUDA device$"):
        TorchBackend(make_tiny_model(0, SMALL_ARCH), precision="tf32")
