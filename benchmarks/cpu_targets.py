"""Every CPU backend side by side: OFA-tiny / OFA-base shapes, random weights, one worker process per backend.

For each size: a random bundle (``ifseg_deploy.bench.synthetic.random_bundle``, 15 categories), its
exports (dynamic and static 512x512 ONNX; fp16 and int8 ONNX graphs; OpenVINO IR with fp32 and fp16
weights and int8; each int8 model three ways: ONNX Runtime's quantizer, products with weights only;
NNCF, every convolution and matrix product; NNCF, the convolutions only; calibrated on 8 synthetic
640x480 scenes from ``ifseg_deploy.exporter.onnx.scene``), and every backend x precision. Network
only (backbone + encoder + decoder) on a 512x512 input and end to end (decode-free pre-processing,
network, 25 kNN steps, up-sampling) on a 640x480 frame; figures are medians over rounds. The logits
of each backend are compared with PyTorch fp32 on the same input (relative RMS, grid label
agreement). The matrix-product peaks of this CPU (a 2048^3 fp32 ``torch.mm``, bf16 too where the CPU
has native bf16, and a 2048^3 u8 x s8 ONNX Runtime ``MatMulInteger``) are measured first, and each
row's arithmetic rate (the fp32 model's FLOP count from ``torch.utils.flop_counter``) is given as a
fraction of the peak of the precision it multiplies in (int8 rows: the int8 peak). Reduced-precision
models are exported with ``gate=False`` and timed; a row whose export gate would refuse it (rel-RMS
of its logits against fp32 PyTorch, on these random weights) is marked with the gate's figures.

Why one worker process per backend (``--mode workers``, the default): with every runtime loaded
in one process, the idle thread pools of one runtime (OpenMP for PyTorch, ONNX Runtime's own
pool, OpenVINO's TBB arena) keep cores busy while the next runtime runs, and on a 2-core machine
that more than tripled some rows (PyTorch fp32 OFA-tiny: 490 ms alone, 1.5-3.5 s beside the
others). Here each backend lives in its own spawned worker, the workers are loaded and warmed up
together, and every round asks them in turn, one at a time, with ``--pause`` seconds between
calls so that a pool that spins after its call has gone to sleep before the next one starts;
load from other programs still hits all rows alike. Each runtime keeps its default threading, as
a user running it alone gets it. The two other modes are the checks of that choice:

* ``--mode alone``: the control; one worker at a time runs all its rounds and exits before the
  next one starts (the stand-alone time of each backend).
* ``--mode one-process``: every backend in one worker, with idle pools told not to spin:
  ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported) and ONNX Runtime's
  ``session.intra_op.allow_spinning`` / ``session.inter_op.allow_spinning`` = 0, set here and not
  in the backend, whose users keep ONNX Runtime's default (OpenVINO's CPU plugin has no such
  switch; it runs with the backend's LATENCY hint).

    python3 benchmarks/cpu_targets.py [--archs tiny base] [--rounds 5] [--mode workers|alone|one-process]
        [--compile] [--bpe-dir ../shared/bpe] [--json out.json]

Each worker holds its own model (and its own torch), so ``--mode workers`` needs the memory of
every row at once; ``--mode alone`` needs one row's. Figures taken while other programs load the
CPU are not comparable between runs: the load average before and after is printed and stored.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ifseg_deploy.bench.compare import calibration_folder, machine_info
from ifseg_deploy.bench.synthetic import CATEGORIES, random_bundle
from ifseg_deploy.config import ofa_preset
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.api import export_model
from ifseg_deploy.exporter.args import ExportArgs
from ifseg_deploy.exporter.onnx.scene import synthetic_scene
from ifseg_deploy.model import SegOFA
from ifseg_deploy.runtime.loader import load
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.runtime.torch_backend import cpu_has_bf16

MODES = ("workers", "alone", "one-process")
CALIBRATION = "8 synthetic 640x480 scenes"

Row = Tuple[str, dict]  # (model path, backend options)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of an ``n x n x n`` ``torch.mm`` in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b)) for _ in range(repeats)) / 1e6


def int8_matmul_peak(n: int = 2048, repeats: int = 3) -> float:
    """GOP/s of an ``n x n x n`` u8 x s8 -> int32 ONNX Runtime ``MatMulInteger`` (best of ``repeats``):
    the int8 product ONNX Runtime's quantised graphs run (``torch._int_mm`` on a CPU is a reference
    loop, thousands of times slower, so it gives no peak)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-64, 64, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    session.run(None, a)
    return 2 * n**3 / min(timed(lambda: session.run(None, a)) for _ in range(repeats)) / 1e6


def peak_of(name: str, peaks: Dict[str, float]) -> float:
    """The matrix-product peak of the precision row ``name`` runs its products in."""
    return peaks["int8" if "int8" in name else "bf16" if "bf16" in name else "fp32"]


def peak_line(peaks: Dict[str, float]) -> str:
    """``fp32 30 GFLOP/s, int8 60 GOP/s`` (the peaks measured)."""
    return ", ".join(f"{k} {v:.0f} {'GOP/s' if k == 'int8' else 'GFLOP/s'}" for k, v in peaks.items())


def model_gflop(arch: str, bundle: str, bpe_dir: str) -> float:
    """GFLOP of one 512x512 forward of the fp32 model (``torch.utils.flop_counter``; a fresh module in
    autograd mode, as the counter's module tracker needs)."""
    from torch.utils.flop_counter import FlopCounterMode

    vocab = load(bundle, device="cpu", bpe_dir=bpe_dir).vocabulary.prepare(CATEGORIES)
    model = SegOFA(ofa_preset(arch)).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 512, 512), vocab.prompt_embeds.clone(), vocab.class_embeds.clone())
    return counter.get_total_flops() / 1e9


def variants(
    bundle: str, work: str, compile_: bool, static: bool, bpe_dir: str, only: Optional[List[str]] = None
) -> Tuple[Dict[str, object], Dict[str, str]]:
    """name -> (model path, backend options), or the one-line reason the row's export failed; and
    name -> what the export gate says of a reduced-precision row it would refuse. Exports are made
    here with ``gate=False`` (and kept in ``work`` for later runs, with ``gates.json``)."""
    stem = os.path.join(work, os.path.splitext(os.path.basename(bundle))[0])
    out: Dict[str, object] = {"PyTorch fp32": (bundle, {"precision": "fp32"})}
    if cpu_has_bf16():
        out["PyTorch bf16"] = (bundle, {"precision": "bf16"})
        if compile_:
            out["PyTorch bf16 + compile"] = (bundle, {"precision": "bf16", "compile": True})
    calib = os.path.join(work, "calibration")
    if not os.path.isdir(calib):
        calibration_folder(synthetic_scene(480, 640, seed=100), calib)
    exports = {
        "ONNX Runtime fp32, dynamic graph": ("dynamic.onnx", dict(format="onnx")),
        "ONNX Runtime fp32, static graph": ("static.onnx", dict(format="onnx", static=True)),
        "ONNX Runtime fp16 graph": ("fp16.onnx", dict(format="onnx", precision="fp16")),
        "ONNX Runtime int8 graph, ORT quantizer": (
            "int8.onnx",
            dict(format="onnx", precision="int8", calib_dir=calib, quantizer="onnxruntime"),
        ),
        "ONNX Runtime NNCF int8": (
            "nncf_int8.onnx",
            dict(format="onnx", precision="int8", calib_dir=calib, quantizer="nncf"),
        ),
        "ONNX Runtime NNCF int8, convolutions": (
            "nncf_conv_int8.onnx",
            dict(format="onnx", precision="int8", calib_dir=calib, quantizer="nncf", int8_scope="convolutions"),
        ),
        "OpenVINO fp32": ("fp32_openvino", dict(format="openvino", precision="fp32")),
        "OpenVINO fp32, fp16 weights": ("fp16_openvino", dict(format="openvino", precision="fp16")),
        "OpenVINO int8, ORT quantizer": (
            "int8_openvino",
            dict(format="openvino", precision="int8", calib_dir=calib, quantizer="onnxruntime"),
        ),
        "OpenVINO NNCF int8": (
            "nncf_int8_openvino",
            dict(format="openvino", precision="int8", calib_dir=calib, quantizer="nncf"),
        ),
        "OpenVINO NNCF int8, convolutions": (
            "nncf_conv_int8_openvino",
            dict(format="openvino", precision="int8", calib_dir=calib, quantizer="nncf", int8_scope="convolutions"),
        ),
    }
    gates_file = os.path.join(work, "gates.json")
    gates = json.load(open(gates_file, encoding="utf-8")) if os.path.isfile(gates_file) else {}
    if not static:
        del exports["ONNX Runtime fp32, static graph"]
    if only:  # --rows: the named rows only
        exports = {name: e for name, e in exports.items() if name in only}
    for name, (suffix, settings) in exports.items():
        path = f"{stem}_{suffix}"
        options = {"precision": "fp32"} if settings["format"] == "openvino" else {}
        out[name] = (path, options)
        if os.path.exists(path):  # kept from an earlier run with the same --work
            continue
        t0 = time.perf_counter()
        try:  # written even below its gate (gate=False), timed, and marked with what the gate says
            result = export_model(
                bundle, ExportArgs(out=path, categories=CATEGORIES, bpe_dir=bpe_dir, gate=False, **settings)
            )
        except IFSegError as e:
            out[name] = f"export failed: {e}"
            print(f"  {suffix}: {out[name]}", flush=True)
            continue
        report = result.openvino.verification if result.openvino else result.onnx.precision
        if getattr(report, "ok", True) is False:
            gates[path] = (
                f"below its export gate here (logits rel-RMS {report.rel_rms:.2e}, gate {report.max_rel_rms:.0e})"
            )
        print(f"  exported {suffix} in {time.perf_counter() - t0:.0f} s", flush=True)
    with open(gates_file, "w", encoding="utf-8") as fh:
        json.dump(gates, fh)
    if cpu_has_bf16() and "OpenVINO fp32" in out:
        out["OpenVINO bf16"] = (out["OpenVINO fp32"][0], {"precision": "bf16"})
        for name in ("OpenVINO int8, ORT quantizer", "OpenVINO NNCF int8"):
            if name in out and not isinstance(out[name], str):
                out[name + " + bf16 hint"] = (out[name][0], {"precision": "bf16"})
    return out, {name: gates[v[0]] for name, v in out.items() if not isinstance(v, str) and v[0] in gates}


@contextmanager
def quiet_pools(on: bool) -> Iterator[None]:
    """While ``on``: workers spawned here get ``OMP_WAIT_POLICY=PASSIVE`` (read when torch is
    imported, so it goes through the environment of a new process)."""
    before = os.environ.get("OMP_WAIT_POLICY")
    if on:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        if on and before is None:
            del os.environ["OMP_WAIT_POLICY"]
        elif on:
            os.environ["OMP_WAIT_POLICY"] = before


def _ort_without_spinning() -> None:
    """Make every ONNX Runtime session of this process keep its idle threads asleep (the options
    are fixed when a session is made, inside the backend)."""
    import onnxruntime as ort

    class Options(ort.SessionOptions):
        def __init__(self):
            super().__init__()
            self.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.add_session_config_entry("session.inter_op.allow_spinning", "0")

    ort.SessionOptions = Options


def worker(conn, rows: Dict[str, Row], bpe_dir: str, quiet: bool) -> None:
    """A worker process: loads ``rows``, then answers ``(command, name)`` messages until ``stop``:
    ``warm`` -> (first-run ms, logits as float32 numpy, end to end possible), ``net`` / ``e2e`` -> ms."""
    if quiet:
        _ort_without_spinning()
    runtimes = {name: load(path, device="cpu", bpe_dir=bpe_dir, **options) for name, (path, options) in rows.items()}
    vocab = next(iter(runtimes.values())).vocabulary.prepare(CATEGORIES)
    images = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    # end to end only where the graph takes the 640x480 frame's 512x683 input (not the static 512x512 graph)
    segmenters = {
        name: Segmenter(rt.backend, rt.vocabulary, CATEGORIES, preprocessing=rt.preprocessing)
        for name, rt in runtimes.items()
        if rt.backend.capabilities.image_size is None
    }

    def net(name: str):
        return runtimes[name].backend.run(images, vocab.prompt_embeds, vocab.class_embeds).logits

    conn.send("ready")
    while True:
        command, name = conn.recv()
        if command == "stop":
            return
        if command == "warm":  # the first run of a shape (compilation, biases, arenas)
            out = {}
            ms = timed(lambda: out.setdefault("logits", net(name)))
            if name in segmenters:
                segmenters[name].segment(frame)
            conn.send((ms, out["logits"].float().numpy(), name in segmenters))
        elif command == "net":
            conn.send(timed(lambda: net(name)))
        else:
            conn.send(timed(lambda: segmenters[name].segment(frame)))


class Worker:
    """The parent's handle on one worker process (spawned: a fresh interpreter, its own thread pools)."""

    def __init__(self, rows: Dict[str, Row], bpe_dir: str, quiet: bool):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        with quiet_pools(quiet):
            self.process = ctx.Process(target=worker, args=(child, rows, bpe_dir, quiet), daemon=True)
            self.process.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("worker failed to start")

    def ask(self, command: str, name: str, pause: float):
        self.conn.send((command, name))
        answer = self.conn.recv()
        time.sleep(pause)  # let a pool that spins after its call go to sleep
        return answer

    def stop(self) -> None:
        self.conn.send(("stop", ""))
        self.process.join()


def run_rounds(workers: Dict[str, Worker], rounds: int, pause: float, first_ms, logits, e2e_ok, net, e2e) -> None:
    """Warm up every row of ``workers`` (name -> its worker), then ``rounds`` rounds asking each row in turn."""
    for name, w in workers.items():
        first_ms[name], logits[name], e2e_ok[name] = w.ask("warm", name, pause)
    for r in range(rounds):
        for name, w in workers.items():
            net.setdefault(name, []).append(w.ask("net", name, pause))
            if e2e_ok[name]:
                e2e.setdefault(name, []).append(w.ask("e2e", name, pause))
        if len(workers) > 1 or r == rounds - 1:
            print(
                f"  round {r + 1}/{rounds} done" + ("" if len(workers) > 1 else f" ({next(iter(workers))})"), flush=True
            )


def measure(
    arch: str,
    work: str,
    rounds: int,
    compile_: bool,
    static: bool,
    bpe_dir: str,
    mode: str,
    pause: float,
    export_only: bool = False,
    only: Optional[List[str]] = None,
) -> dict:
    print(f"OFA-{arch}: building the random bundle and its exports", flush=True)
    bundle = os.path.join(work, f"ofa_{arch}_random.safetensors")
    if not os.path.isfile(bundle):
        random_bundle(ofa_preset(arch), bundle, CATEGORIES, bpe_dir)
    made, below_gate = variants(bundle, work, compile_, static, bpe_dir, only)
    if export_only:
        return {}
    rows = {name: v for name, v in made.items() if not isinstance(v, str)}
    skipped = {name: v for name, v in made.items() if isinstance(v, str)}
    gflop = model_gflop(arch, bundle, bpe_dir)
    first_ms, logits, e2e_ok, net, e2e = {}, {}, {}, {}, {}
    if mode == "alone":
        for name, row in rows.items():
            w = Worker({name: row}, bpe_dir, quiet=False)
            run_rounds({name: w}, rounds, pause, first_ms, logits, e2e_ok, net, e2e)
            w.stop()
    else:
        groups = [{name: row} for name, row in rows.items()] if mode == "workers" else [rows]
        handles = [Worker(group, bpe_dir, quiet=mode == "one-process") for group in groups]
        run_rounds(
            {name: h for h, group in zip(handles, groups) for name in group},
            rounds,
            pause,
            first_ms,
            logits,
            e2e_ok,
            net,
            e2e,
        )
        for h in handles:
            h.stop()
    ref = logits["PyTorch fp32"].astype(np.float64)
    table = {}
    for name in rows:
        out = logits[name].astype(np.float64)
        ms = statistics.median(net[name])
        e2e_ms = statistics.median(e2e[name]) if e2e.get(name) else None
        table[name] = {
            "network_ms": ms,
            "first_run_ms": first_ms[name],
            "end_to_end_ms": e2e_ms,
            "end_to_end_fps": 1000.0 / e2e_ms if e2e_ms else None,
            "speedup": statistics.median(net["PyTorch fp32"]) / ms,
            "gflops": gflop / ms * 1e3,
            "logits_rel_rms": float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref**2))),
            "grid_label_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean()),
            "below_gate": below_gate.get(name),
        }
    return {"gflop_per_frame": gflop, "rows": table, "skipped": skipped}


def main(argv: Optional[List[str]] = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["tiny", "base"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="workers",
        help="workers: one process per backend, asked in turn (default); alone: one backend at a time (the control); "
        "one-process: all in one process with idle pools told not to spin",
    )
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between two timed calls (default 0.2)")
    parser.add_argument(
        "--static-archs",
        nargs="*",
        default=["tiny"],
        help="sizes that also get a static 512x512 ONNX graph (default: tiny; OFA-base's export ran out of the 23 GB "
        "of the test machine)",
    )
    parser.add_argument(
        "--rows", nargs="+", help="only these exported rows (names as printed; PyTorch rows always run)"
    )
    parser.add_argument("--compile", action="store_true", help="also time PyTorch bf16 + torch.compile")
    parser.add_argument("--bpe-dir", default=os.path.join(here, "..", "..", "shared", "bpe"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--work", help="folder for the bundles and exports, reused by later runs (default: a temporary one)"
    )
    parser.add_argument(
        "--export-only", action="store_true", help="make the bundles and exports in --work, time nothing"
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    # bf16 only where the CPU multiplies it natively (elsewhere torch.mm emulates it at < 1 GFLOP/s and no row runs it)
    peaks = {"fp32": matmul_peak(torch.float32), "int8": int8_matmul_peak()}
    if cpu_has_bf16():
        peaks["bf16"] = matmul_peak(torch.bfloat16)
    print(f"matmul peak: {peak_line(peaks)}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cpu_targets_") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        for arch in args.archs:
            results[arch] = measure(
                arch,
                work,
                args.rounds,
                args.compile,
                arch in args.static_archs,
                args.bpe_dir,
                args.mode,
                args.pause,
                args.export_only,
                args.rows,
            )
    if args.export_only:
        return 0
    machine = dict(machine_info(), load_before=load_before, load_after=os.getloadavg(), matmul_peak_gflops=peaks)
    print(
        f"\n{machine['cpu']}, {machine['threads']} threads, load average {load_before[0]:.1f} -> "
        f"{machine['load_after'][0]:.1f}; "
        f"matmul peak {peak_line(peaks)}"
    )
    for arch, res in results.items():
        how = {
            "workers": "alternating rounds, one process per backend",
            "alone": "rounds, one backend at a time",
            "one-process": "alternating rounds, all backends in one process",
        }[args.mode]
        print(
            f"\nOFA-{arch} ({res['gflop_per_frame']:.0f} GFLOP per 512x512 frame), median of {args.rounds} {how}; "
            f"int8 calibrated on {CALIBRATION}; % peak: of the peak of the precision the row multiplies in"
        )
        width = max(len(name) for name in [*res["rows"], *res["skipped"]]) + 2
        print(
            f"  "
            f"{'backend':<{width}}{'net ms':>9}{'speed-up':>9}{'GFLOP/s':>9}{'% peak':>8}{'1st run ms':>11}"
            f"{'e2e FPS':>9}{'rel-RMS':>10}{'grid agree':>11}"
        )
        for name, row in res["rows"].items():
            peak = peak_of(name, peaks)
            print(
                f"  "
                f"{name:<{width}}{row['network_ms']:>9.0f}{row['speedup']:>8.2f}x{row['gflops']:>9.0f}"
                f"{100 * row['gflops'] / peak:>7.0f}%"
                f"{row['first_run_ms']:>11.0f}{row['end_to_end_fps'] or float('nan'):>9.2f}"
                f"{row['logits_rel_rms']:>10.1e}{100 * row['grid_label_agreement']:>10.1f}%"
                + (f"  * {row['below_gate']}" if row["below_gate"] else "")
            )
        for name, reason in res["skipped"].items():
            print(f"  {name:<{width}}skipped: {reason}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "machine": machine,
                    "rounds": args.rounds,
                    "mode": args.mode,
                    "pause_s": args.pause,
                    "results": results,
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
