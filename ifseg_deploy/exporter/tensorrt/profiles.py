"""Deployment target profiles: TensorRT optimisation-profile shapes, precision, workspace.

Shapes are ``(min, opt, max)`` per dimension. Image sizes are given for the reference short side
512 and scale linearly with ``--imgsz``; prompt length and class count bound the run-time
vocabulary (prompt = 15 fixed tokens + the category tokens). The built-in profiles below are the
source of the files in the repository's top-level ``export/`` folder (profile JSON, the
equivalent ``trtexec`` command line, a Triton ``config.pbtxt`` template), regenerated with
``python -m ifseg_deploy.triton.config export/``. A user profile is a JSON file with the same
fields, passed as ``--profile path.json``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Dict, Optional, Sequence, Tuple

from ...errors import IFSegError
from ...precision import GRAPHS
from ...runtime.graph_contract import CLASSES, IMAGES, PROMPT

Range = Tuple[int, int, int]
REFERENCE_IMGSZ = 512
EMBED_DIM_VAR = "${EMBED_DIM}"


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target."""

    name: str
    description: str
    precision: str
    workspace_mb: int
    batch: Range
    height: Range
    width: Range
    prompt_len: Range
    classes: Range
    tensorrt: str = "10"  # operator table the static check uses: "11" desktop / data centre, "10" JetPack 6
    builder_optimization_level: int = 3
    triton_instances: int = 1

    def __post_init__(self):
        if self.precision not in GRAPHS:
            raise IFSegError(f"profile {self.name}: precision must be one of {', '.join(GRAPHS)}")
        for f in ("batch", "height", "width", "prompt_len", "classes"):
            lo, opt, hi = getattr(self, f)
            if not 1 <= lo <= opt <= hi:
                raise IFSegError(f"profile {self.name}: {f} must be 1 <= min <= opt <= max, got {getattr(self, f)}")
        if self.workspace_mb < 1:
            raise IFSegError(f"profile {self.name}: workspace_mb must be positive")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict, origin: str = "profile") -> "TargetProfile":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = required - set(d)
        if unknown or missing:
            raise IFSegError(
                f"{origin}: unknown fields {sorted(unknown)} / missing fields {sorted(missing)}; see "
                f"export/profiles/*.json"
            )
        try:
            kw = {k: tuple(int(x) for x in v) if isinstance(v, list) else v for k, v in d.items()}
            if any(len(kw[k]) != 3 for k in ("batch", "height", "width", "prompt_len", "classes")):
                raise ValueError("ranges need three values")
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise IFSegError(f"{origin}: bad value ({e}); ranges are [min, opt, max] lists of integers") from None

    def image_range(self, imgsz: int) -> Tuple[Range, Range]:
        """Height and width ranges at short side ``imgsz`` (min rounded down, max up)."""
        s = imgsz / REFERENCE_IMGSZ

        def scale(r: Range) -> Range:
            lo, opt, hi = max(16, math.floor(r[0] * s)), round(r[1] * s), math.ceil(r[2] * s)
            return lo, min(max(opt, lo), hi), hi

        return scale(self.height), scale(self.width)

    def input_shapes(
        self, embed_dim: int, imgsz: int, static: Optional[Tuple[int, int, int]] = None
    ) -> Dict[str, Tuple[Tuple[int, ...], ...]]:
        """``{input: (min_shape, opt_shape, max_shape)}`` for a graph; ``static`` = fixed ``(batch, H, W)``."""
        if static is not None:
            b, h, w = static
            images = ((b, 3, h, w),) * 3
        else:
            hr, wr = self.image_range(imgsz)
            images = tuple((self.batch[i], 3, hr[i], wr[i]) for i in range(3))
        return {
            IMAGES: images,
            PROMPT: tuple((1, self.prompt_len[i], embed_dim) for i in range(3)),
            CLASSES: tuple((self.classes[i], embed_dim) for i in range(3)),
        }


BUILTIN: Dict[str, TargetProfile] = {
    p.name: p
    for p in [
        TargetProfile(
            "jetson-orin-nano",
            "Jetson Orin Nano 8 GB (sm_87, shared memory): one camera stream",
            "fp16",
            1024,
            (1, 1, 1),
            (512, 512, 1024),
            (512, 683, 1024),
            (16, 40, 160),
            (1, 8, 48),
        ),
        TargetProfile(
            "jetson-agx-orin",
            "Jetson AGX Orin 32/64 GB (sm_87): a few streams",
            "fp16",
            4096,
            (1, 1, 4),
            (512, 512, 1024),
            (512, 683, 1366),
            (16, 48, 320),
            (1, 16, 100),
        ),
        TargetProfile(
            "desktop-rtx",
            "Desktop RTX 30/40 series (sm_86/sm_89), 8-24 GB",
            "fp16",
            4096,
            (1, 1, 4),
            (512, 512, 1024),
            (512, 683, 1366),
            (16, 48, 512),
            (1, 20, 171),
            tensorrt="11",
        ),
        TargetProfile(
            "datacenter",
            "A100/H100 class (sm_80/sm_90): batched serving",
            "fp16",
            16384,
            (1, 8, 16),
            (512, 512, 1024),
            (512, 683, 1366),
            (16, 64, 768),
            (1, 32, 256),
            tensorrt="11",
            triton_instances=2,
        ),
    ]
}


def load_profile(name_or_path: str) -> TargetProfile:
    """A built-in profile by name, or a JSON file with the same fields."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    if name_or_path.endswith(".json") or os.path.sep in name_or_path:
        try:
            with open(name_or_path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as e:
            raise IFSegError(
                f"cannot read profile {name_or_path} ({e.strerror}); pass a built-in name ({', '.join(BUILTIN)}) or a "
                f"JSON file"
            ) from None
        except json.JSONDecodeError as e:
            raise IFSegError(f"profile {name_or_path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict):
            raise IFSegError(f"profile {name_or_path} must hold a JSON object")
        return TargetProfile.from_dict(data, name_or_path)
    raise IFSegError(f"unknown profile '{name_or_path}'; choose one of {', '.join(BUILTIN)} or pass a JSON file")


def _shape(s: Sequence[int]) -> str:
    return "x".join(str(d) for d in s)


def trtexec_command(
    profile: TargetProfile,
    onnx_path: str,
    engine_path: str,
    embed_dim,
    imgsz: int = REFERENCE_IMGSZ,
    static: Optional[Tuple[int, int, int]] = None,
    timing_cache: Optional[str] = None,
) -> str:
    """The ``trtexec`` line that builds (and times) the same engine by hand: ``--stronglyTyped``,
    so the engine's precision is the ONNX graph's (no ``--fp16`` / ``--int8`` / calibration flags;
    TensorRT 10.x and 11.x).

    ``embed_dim`` may be the shell placeholder ``${EMBED_DIM}`` for templates.
    """
    shapes = profile.input_shapes(embed_dim, imgsz, static)  # type: ignore[arg-type]
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--stronglyTyped"]
    for i, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        args.append(f"{flag}=" + ",".join(f"{k}:{_shape(v[i])}" for k, v in shapes.items()))
    args.append(f"--memPoolSize=workspace:{profile.workspace_mb}M")
    args.append(f"--builderOptimizationLevel={profile.builder_optimization_level}")
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(f'"{a}"' if EMBED_DIM_VAR in a else shlex.quote(a) for a in args)


def profile_files(profile: TargetProfile) -> Dict[str, str]:
    """The files of ``export/`` for one profile that are not Triton's: ``{relative path: text}``
    (all of them: :func:`ifseg_deploy.triton.config.target_files`)."""
    cmd = trtexec_command(profile, "model.onnx", "model.engine", EMBED_DIM_VAR, timing_cache="timing.cache")
    script = (
        "#!/bin/sh\n# Build and time an ifseg-deploy engine by hand for " + profile.description + ".\n"
        "# EMBED_DIM: model width (256 OFA-tiny, 512 medium, 768 base). Image shapes are for ifseg-deploy export "
        "--imgsz 512.\n"
        "# Strongly typed: the engine runs in the precision of model.onnx (ifseg-deploy export --precision "
        "fp32|fp16|int8).\n"
        "EMBED_DIM=${EMBED_DIM:-256}\n" + cmd + "\n"
    )
    return {
        f"profiles/{profile.name}.json": "{\n"
        + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in profile.to_dict().items())
        + "\n}\n",
        f"{profile.name}/trtexec.sh": script,
    }
