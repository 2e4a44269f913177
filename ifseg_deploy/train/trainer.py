"""The image-free training loop: artificial batches -> loss -> fairseq Adam, resumable, AMP, DDP.

Reproducibility: the artificial batch of update ``t`` is drawn from ``stream_seed(seed, DATA, t)``
(the same global batch whatever the number of processes or accumulation steps; each process
renders its slice), and the dropout / drop-path masks of global sample ``i`` of update ``t`` come
from a generator seeded with ``stream_seed(seed, DROPOUT, t, i)``
(:func:`~ifseg_deploy.model.stochastic.per_sample_masks`), so they too do not depend on how the
batch is split. Any process count and ``--grad-accum`` therefore compute the same updates, equal up
to float summation order. Together with the saved trainable weights, optimiser moments, loss
scaler and loss history, a resumed run ends with exactly the weights of an uninterrupted one
(same device type, process count and thread count; on CUDA, atomic additions in some backward
kernels make even two uninterrupted runs differ in the last bits, so there the guarantee is the
same data, dropout and optimiser state).

Files: the bundle ``--out`` is written once, atomically, at the end. The resumable state
``<out stem>.state.pt`` (trainable weights + optimiser state, plain tensors, loaded with
``weights_only=True``) is written atomically every ``save_every`` updates, when SIGINT / SIGTERM
stops the run (:mod:`.stopping`: after the current update, or during the held-out scoring once
all updates are done) and, under torchrun, by rank 0 when another process fails; it is deleted
when training completes. Writing the bundle is the commit point: a signal that arrives during it
lets it finish and the run end normally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..artificial.images import MAX_CELLS, ArtificialImages, stream_seed
from ..checkpoint import load_model
from ..checkpoint.bundle import save_bundle
from ..errors import IFSegError
from ..fileio import atomic_path, check_output_file
from ..model import SegOFA
from ..model.encoder import check_input_shape
from ..model.stochastic import per_sample_masks
from ..precision import TRAIN
from ..preprocess import Preprocessing
from ..runtime.device import parse_device
from ..runtime.vocabulary import Vocabulary
from ..text.categories_file import ClassSpec, check_classes
from ..version import __version__
from .distributed import DistContext, PeerFailure
from .freeze import freeze_for_imfree
from .holdout import DEFAULT_HOLDOUT_SIZE, holdout_metrics
from .loss import imfree_loss
from .optim import FairseqAdam, cosine_lr
from .stopping import StopRequests, TrainingStopped, signal_exit_code

STATE_FORMAT = 1
DATA_STREAM, DROPOUT_STREAM = 1, 2
BUNDLE_EXT = ".safetensors"
#: Steps averaged for the reported final loss.
FINAL_LOSS_WINDOW = 20


class _Stop(Exception):
    """Internal: a stop was asked for; the trainer saves the state and raises :class:`TrainingStopped`."""


def state_path(out: str) -> str:
    """Resumable training state next to the bundle: ``model.safetensors`` -> ``model.state.pt``."""
    stem = out[: -len(BUNDLE_EXT)] if out.endswith(BUNDLE_EXT) else out
    return stem + ".state.pt"


@dataclass
class TrainConfig:
    """Settings of one training run; the defaults are the reference recipe (IFSeg ``coco_unseen.sh``)."""

    checkpoint: str
    classes: List[ClassSpec]
    out: str
    bpe_dir: Optional[str] = None
    steps: int = 2000
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    grad_accum: int = 1
    save_every: int = 0
    resume: bool = False
    max_cells: int = MAX_CELLS
    dropout: float = 0.1
    drop_path: float = 0.1
    holdout_size: int = DEFAULT_HOLDOUT_SIZE
    progress: bool = True

    def validate(self, world_size: int = 1) -> None:
        """One-line errors for impossible settings (before anything is loaded or written)."""
        checks = [
            (self.steps >= 1, f"steps={self.steps}: must be >= 1"),
            (self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1"),
            (self.grad_accum >= 1, f"grad_accum={self.grad_accum}: must be >= 1"),
            (self.lr > 0, f"lr={self.lr}: must be > 0"),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay}: must be >= 0"),
            (self.seed >= 0, f"seed={self.seed}: must be >= 0"),
            (self.save_every >= 0, f"save_every={self.save_every}: must be >= 0"),
            (1 <= self.max_cells, f"max_cells={self.max_cells}: must be >= 1"),
            (
                0 <= self.dropout < 1 and 0 <= self.drop_path < 1,
                f"`dropout` and `drop_path` must be in [0, 1) (got {self.dropout}, {self.drop_path})",
            ),
            (self.holdout_size >= 1, f"holdout_size={self.holdout_size}: must be >= 1"),
            (self.precision in TRAIN, f"precision={self.precision}: must be one of {', '.join(TRAIN)}"),
            (self.out.endswith(BUNDLE_EXT), f"out={self.out}: must name a {BUNDLE_EXT} bundle file"),
            (not os.path.isdir(self.out), f"out={self.out} is a folder; give a file name ending in {BUNDLE_EXT}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise IFSegError(msg)
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise IFSegError(
                f"batch_size={self.batch_size} is not divisible by processes x `grad_accum` = {world_size} x "
                f"{self.grad_accum}; "
                "choose a batch size that splits evenly"
            )
        check_classes(self.classes, training=True)


@dataclass
class TrainResult:
    """What a finished run produced."""

    bundle: str
    steps: int
    final_loss: float
    holdout: Dict[str, float]
    seconds: float
    steps_per_s: float


class _Objective(nn.Module):
    """The module DDP wraps: one artificial micro-batch -> image-free loss."""

    def __init__(self, model: SegOFA):
        super().__init__()
        self.model = model

    def forward(self, cell_embeds: Tensor, targets: Tensor, prompt_embeds: Tensor, class_embeds: Tensor) -> Tensor:
        return imfree_loss(self.model, cell_embeds, targets, prompt_embeds, class_embeds)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if device.type != "cuda":
        if precision == "fp16":
            raise IFSegError("precision=fp16 needs a CUDA device; use fp32 (default) or bf16 on CPU")
        return "fp32" if precision == "auto" else precision
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


class Trainer:
    """Image-free training of a SegOFA model on a list of classes (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, dist_ctx: Optional[DistContext] = None):
        self.dist = dist_ctx or DistContext.from_env()
        cfg.validate(self.dist.world_size)
        self.cfg = cfg
        self.state_file = state_path(cfg.out)
        if self.dist.is_main:
            check_output_file(cfg.out, "out", "safetensors")  # before any work (its state file is checked on resume)
            if os.path.exists(self.state_file) and not cfg.resume:
                raise IFSegError(
                    f"{self.state_file} holds an interrupted run; pass resume=True to continue it or delete the file "
                    f"to start over"
                )
        self.device = self.dist.device(parse_device(cfg.device))
        self.precision = _resolve_precision(cfg.precision, self.device)

        loaded = load_model(cfg.checkpoint)
        self.base_kind = loaded.kind
        self.prompt_prefix = loaded.prompt_prefix
        arch = dataclasses.replace(loaded.arch, dropout=cfg.dropout, drop_path=cfg.drop_path)
        model = SegOFA(arch)
        model.load_state_dict(loaded.model.state_dict())
        del loaded
        self.model = model
        self.trainable = freeze_for_imfree(model)

        vocab = Vocabulary.from_bpe(
            cfg.bpe_dir,
            cfg.checkpoint,
            model.embed_tokens.weight,
            prompt_prefix=self.prompt_prefix,
            class_words={c.name: c.words for c in cfg.classes},
        )
        self.categories = [c.name for c in cfg.classes]
        prepared = vocab.prepare(self.categories)
        check_input_shape(
            arch, (arch.seg_grid, arch.seg_grid), len(prepared.prompt_ids)
        )  # before any update, not at the first
        words = vocab.word_embeddings([w for c in cfg.classes for w in c.words])
        # A class's embedding (its output head) is the mean over its words' embeddings.
        self.class_embeds = prepared.class_embeds.to(self.device)
        self.prompt_embeds = prepared.prompt_embeds.to(self.device)
        self.images = ArtificialImages(cfg.classes, words.to(self.device), arch.seg_grid, cfg.max_cells)

        self.dist.init(self.device)
        model.to(self.device).train()
        objective: nn.Module = _Objective(model)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
        self.objective = objective
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.trainable]
        self.optimizer = FairseqAdam(self.params, cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.losses: List[float] = []
        self.step = 0
        self.elapsed = 0.0
        self.stops = StopRequests()
        self.stop_agreed = False

    # ----------------------------------------------------------------------------- state
    def fingerprint(self) -> Dict[str, Any]:
        """Settings a resumed run must share with the interrupted one."""
        c = self.cfg
        return {
            "checkpoint": os.path.basename(c.checkpoint),
            "checkpoint_bytes": os.path.getsize(c.checkpoint),
            "classes": [[k.name, list(k.words)] for k in c.classes],
            "steps": c.steps,
            "batch_size": c.batch_size,
            "lr": c.lr,
            "weight_decay": c.weight_decay,
            "betas": list(c.betas),
            "eps": c.eps,
            "clip_norm": c.clip_norm,
            "seed": c.seed,
            "max_cells": c.max_cells,
            "dropout": c.dropout,
            "drop_path": c.drop_path,
            "grad_accum": c.grad_accum,
            "world_size": self.dist.world_size,
            "precision": self.precision,
            "device_type": self.device.type,
        }

    def save_state(self) -> None:
        """Write the resumable state atomically (main process only)."""
        if not self.dist.is_main:
            return
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "fingerprint": self.fingerprint(),
            "params": {n: p.detach().cpu().clone() for n, p in zip(self.trainable, self.params)},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "losses": list(self.losses),
            "elapsed": self.elapsed,
        }
        with atomic_path(self.state_file) as tmp:
            torch.save(state, tmp)

    def load_state(self) -> bool:
        """Restore a saved state if there is one; False when starting from scratch."""
        if not os.path.exists(self.state_file):
            return False
        try:
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
            fmt = state["format"]
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise IFSegError(f"cannot read training state {self.state_file} ({msg}); delete it to start over") from None
        if fmt != STATE_FORMAT:
            raise IFSegError(
                f"{self.state_file} has state format {fmt}, expected {STATE_FORMAT}; delete it to start over"
            )
        mine = self.fingerprint()
        diff = sorted(k for k in set(mine) | set(state["fingerprint"]) if mine.get(k) != state["fingerprint"].get(k))
        if diff:
            raise IFSegError(
                f"{self.state_file} was saved with different settings ({', '.join(diff)}); "
                "rerun with the same flags or delete it to start over"
            )
        with torch.no_grad():
            for n, p in zip(self.trainable, self.params):
                p.copy_(state["params"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.losses = [float(x) for x in state["losses"]]
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        return True

    # ----------------------------------------------------------------------------- training
    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def _mask_generators(self, start: int, count: int) -> List[torch.Generator]:
        """One dropout / drop-path generator per global sample ``start .. start + count - 1`` of this update."""
        return [
            torch.Generator(self.device).manual_seed(stream_seed(self.cfg.seed, DROPOUT_STREAM, self.step, start + j))
            for j in range(count)
        ]

    def train_step(self) -> float:
        """One update (all micro-batches of this process); returns the loss averaged over processes.

        Sets ``stop_agreed`` when any process has been asked to stop (the flag travels with the
        loss all-reduce, so every process agrees after the same update).
        """
        cfg, step = self.cfg, self.step
        lr = cosine_lr(step, cfg.steps, cfg.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        layout = self.images.sample_layout(cfg.batch_size, stream_seed(cfg.seed, DATA_STREAM, step))
        micro = cfg.batch_size // (self.dist.world_size * cfg.grad_accum)
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        with self.dist.collectives():  # DDP's gradient all-reduce runs inside backward()
            for i in range(cfg.grad_accum):
                start = (self.dist.rank * cfg.grad_accum + i) * micro
                batch = self.images.render(layout[start : start + micro])
                last = i == cfg.grad_accum - 1
                sync = contextlib.nullcontext() if last or not self.dist.enabled else self.objective.no_sync()
                with sync, per_sample_masks(self._mask_generators(start, micro)):
                    with self._autocast():
                        loss = self.objective(batch.cell_embeds, batch.targets, self.prompt_embeds, self.class_embeds)
                    self.scaler.scale(loss / cfg.grad_accum).backward()
                total += loss.detach() / cfg.grad_accum
        stop = torch.tensor(float(self.stops.requested), device=self.device)
        mean_loss, stop_share = self.dist.mean(torch.stack([total, stop])).tolist()
        self.stop_agreed = stop_share > 0
        if not math.isfinite(mean_loss) and self.precision != "fp16":
            raise IFSegError(f"training diverged (loss {mean_loss} at update {step + 1}); lower `lr`")
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return mean_loss

    def _check_stop(self) -> None:
        """Abandon the held-out scoring when a stop was asked for."""
        if self.stops.requested:
            raise _Stop

    def _stopped(self, reason: str, exit_code: int) -> TrainingStopped:
        return TrainingStopped(reason, exit_code, quiet=not self.dist.is_main)

    def run(self, on_step: Optional[Callable[[int, float], None]] = None) -> TrainResult:
        """Train (continuing a saved state when ``resume``), evaluate the held-out set, write the bundle.

        ``on_step(update, loss)`` is called after every update (and after its state save).

        Raises:
            TrainingStopped: after SIGINT / SIGTERM (state saved, also during the held-out scoring)
                or, under torchrun, after another process failed (rank 0's state saved).
            TrainingAborted: a second signal (the state saved before is intact).
        """
        with self.stops.installed():
            try:
                return self._run(on_step)
            except _Stop:
                self.save_state()
                self.dist.barrier()
                signum = self.stops.signum or signal.SIGTERM  # a process that got none follows the others
                name = signal.Signals(signum).name
                raise self._stopped(
                    f"stopped by {name} after update {self.step}/{self.cfg.steps}; state saved to {self.state_file}",
                    signal_exit_code(signum),
                ) from None
            except PeerFailure as failure:
                # No collective runs inside an optimizer step: the weights and moments are those of
                # update self.step on every process, so rank 0 saves them.
                self.save_state()
                raise self._stopped(
                    f"training stopped after update {self.step}/{self.cfg.steps} ({failure}); "
                    f"state saved to {self.state_file}",
                    1,
                ) from None

    def _run(self, on_step: Optional[Callable[[int, float], None]]) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg
        if cfg.resume:
            found = self.load_state()
            if self.dist.is_main:
                print(
                    f"resuming from {self.state_file} at update {self.step}/{cfg.steps}"
                    if found
                    else f"no saved state at {self.state_file}; starting from update 0"
                )
        first = self.step
        show = cfg.progress and self.dist.is_main
        t0 = run_start = time.perf_counter()
        with tqdm(
            total=cfg.steps, initial=first, unit="step", desc="train", dynamic_ncols=True, disable=not show
        ) as bar:
            while self.step < cfg.steps:
                loss = self.train_step()
                self.losses.append(loss)
                recent = self.losses[-FINAL_LOSS_WINDOW:]
                bar.set_postfix(
                    loss=f"{sum(recent) / len(recent):.4f}",
                    lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                    refresh=False,
                )
                bar.update(1)
                self.elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                if (
                    cfg.save_every
                    and self.step % cfg.save_every == 0
                    and self.step < cfg.steps
                    and not self.stop_agreed
                ):
                    self.save_state()
                    self.dist.barrier()
                if on_step is not None:
                    on_step(self.step, loss)
                if self.stop_agreed:
                    raise _Stop
        run_seconds = time.perf_counter() - run_start
        done = cfg.steps - first
        result = None
        stop = 0.0
        if self.dist.is_main:
            try:
                with tqdm(
                    total=cfg.holdout_size, unit="image", desc="held-out", dynamic_ncols=True, disable=not show
                ) as bar:
                    holdout = holdout_metrics(
                        self.model,
                        self.images,
                        self.prompt_embeds,
                        self.class_embeds,
                        cfg.holdout_size,
                        before_batch=lambda n: (self._check_stop(), bar.update(n)),
                    )
            except _Stop:
                stop = 1.0
        # The others wait here for rank 0's verdict: a stop during its held-out scoring stops them too.
        if self.dist.mean(torch.tensor([stop], device=self.device)).item() > 0:
            raise _Stop
        if self.dist.is_main:
            recent = self.losses[-FINAL_LOSS_WINDOW:]
            result = TrainResult(
                bundle=cfg.out,
                steps=cfg.steps,
                final_loss=sum(recent) / len(recent),
                holdout=holdout,
                seconds=self.elapsed,
                steps_per_s=done / run_seconds if run_seconds > 0 else 0.0,
            )
            # The commit point: a signal from here on lets the bundle be written and the run end normally.
            self.write_bundle(result)
            if os.path.exists(self.state_file):
                os.remove(self.state_file)
        self.dist.shutdown()
        return result  # type: ignore[return-value]

    def bundle_metadata(self, result: TrainResult) -> Dict[str, Any]:
        """The bundle description: architecture, categories, prompt, training settings and metrics."""
        cfg, arch = self.cfg, self.model.cfg
        hierarchy = {c.name: list(c.words) for c in cfg.classes if c.words != (c.name,)}
        training = dict(
            self.fingerprint(),
            recipe="IFSeg image-free (rand_k-1-33), fairseq Adam + cosine, no warm-up",
            holdout_size=cfg.holdout_size,
            final_loss=result.final_loss,
            seconds=round(result.seconds, 3),
            steps_per_s=round(result.steps_per_s, 4),
        )
        training.pop("classes")
        if hierarchy:
            training["hierarchy"] = hierarchy
        return {
            "arch": arch.to_dict(),
            "categories": list(self.categories),
            "prompt_prefix": self.prompt_prefix,
            "preprocessing": Preprocessing(arch.image_size, 4 * arch.image_size).to_dict(),
            "provenance": {
                "tool": f"ifseg-deploy {__version__} train",
                "base_checkpoint": os.path.basename(cfg.checkpoint),
                "base_kind": self.base_kind,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
            "training": training,
            "holdout": {"pixel_acc": result.holdout["pixel_acc"], "miou": result.holdout["miou"]},
        }

    def write_bundle(self, result: TrainResult) -> None:
        state = {k: v.detach().float().cpu() for k, v in self.model.state_dict().items()}
        save_bundle(self.cfg.out, state, self.class_embeds.float().cpu(), self.bundle_metadata(result))


def train(cfg: TrainConfig, on_step: Optional[Callable[[int, float], None]] = None) -> TrainResult:
    """Run image-free training end to end (see :class:`Trainer`)."""
    return Trainer(cfg).run(on_step)
