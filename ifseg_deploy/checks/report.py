"""The text of ``ifseg-deploy checks``: the machine's facts (:func:`.environment.collect`) and the
self-test's table (:class:`.selftest.SelfTestReport`); ``--json`` prints :func:`document` instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional

if TYPE_CHECKING:  # the self-test imports the exporter, which needs the optional onnx package
    from .selftest import SelfTestReport


def _yes_no(value: Optional[bool]) -> str:
    return "unknown" if value is None else "yes" if value else "no"


#: The int8 export that runs fastest on a CPU with (True) or without (False) an int8 dot product: without
#: one, OpenVINO's int8 matrix products are no faster than its float ones (docs/int8.md, "Measured").
INT8_ADVICE = {
    True: "ifseg-deploy export --precision int8 --calib-dir DIR --quantizer nncf (every convolution and matrix "
    "product int8)",
    False: "ifseg-deploy export --precision int8 --calib-dir DIR --quantizer nncf --int8-scope convolutions (no "
    "VNNI: int8 matrix products run no faster than float ones here)",
}


def format_facts(facts: Dict[str, object]) -> str:
    """The facts as aligned ``name  value`` lines, packages last."""
    torch = facts["torch"]
    cpu = facts["cpu"]
    lines = [
        ("ifseg-deploy", facts["ifseg_deploy"]),
        ("Python", facts["python"]),
        ("OS", facts["os"]),
        ("torch", f"{torch['version']} ({'CUDA ' + torch['cuda_build'] if torch['cuda_build'] else 'CPU build'})"),
        ("CPU", f"{cpu['model']}, {cpu['logical_cores']} logical cores, torch uses {cpu['torch_threads']} threads"),
        ("CPU flags", ", ".join(f"{name} {_yes_no(has)}" for name, has in cpu["flags"].items())),
        (
            "CPU paths",
            f"native bf16 {_yes_no(cpu['native_bf16'])}, int8 dot product (VNNI) {_yes_no(cpu['int8_dot_product'])}",
        ),
    ]
    if cpu["int8_dot_product"] is not None:
        lines.append(("CPU int8", INT8_ADVICE[cpu["int8_dot_product"]]))
    if torch["devices"]:
        for d in torch["devices"]:
            lines.append(
                (f"CUDA {d['index']}", f"{d['name']}, compute capability {d['capability']}, {d['memory_gib']} GiB")
            )
        if torch["cudnn"]:
            lines.append(("cuDNN", str(torch["cudnn"])))
    else:
        lines.append(("CUDA", f"none ({torch['cuda_unavailable']})"))
    lines.append(("NVIDIA driver", facts["nvidia_driver"] or "none found"))
    jetson = facts["jetson"]
    if jetson:
        lines.append(("Jetson", f"{jetson['board']}, L4T {jetson['l4t']}"))
    build = facts.get("opencv_build")
    if build:
        lines.append(("OpenCV build", ", ".join(f"{k} {v}" for k, v in build.items())))
    cache = facts["cache"]
    models = cache["models"]
    lines.append(("model cache", f"{cache['folder']} ({len(models)} model file{'s' if len(models) != 1 else ''})"))
    lines += [("", f"  {m['name']}  {m['path']}  {m['size']}") for m in models]
    width = max(len(k) for k, _ in lines)
    out = [f"{k:<{width}}  {v}" for k, v in lines]
    out += ["", "Packages"]
    width = max(len(p["name"]) for p in facts["packages"])
    for p in facts["packages"]:
        if not p["installed"]:
            out.append(f"  {p['name']:<{width}}  not installed: {p['install']}")
            continue
        extra = "".join(f"; {key} {', '.join(p[key])}" for key in ("providers", "devices") if key in p)
        if "error" in p:
            extra += f"; cannot start: {p['error']}"
        out.append(f"  {p['name']:<{width}}  {p['version']}{extra}")
    return "\n".join(out)


def format_selftest(report: "SelfTestReport") -> str:
    """The self-test's rows as a table: result, logits rel-RMS against PyTorch fp32 on the same
    device and its gate, label agreement, median ms; skipped and failed rows with their reason."""
    m = report.model
    lines: List[str] = [
        f"Self-test: random-weight model (embed_dim {m['embed_dim']}, layers {m['layers'][0]}+{m['layers'][1]}), "
        f"{report.image_size[0]}x{report.image_size[1]} scene at short side {report.short_side}, "
        f"against PyTorch fp32 on the same device ({report.seconds:.0f} s)",
    ]
    w = max(len(r.backend) for r in report.rows) + 2
    lines.append(
        f"{'device':<8}{'backend':<{w}}{'prec':<6}{'result':<9}{'rel-RMS':>10}{'gate':>10}{'labels %':>10}{'ms':>9}"
    )
    for r in report.rows:
        head = f"{r.device:<8}{r.backend:<{w}}{r.precision:<6}{r.status:<9}"
        if r.logits_rel_rms is None:
            lines.append(f"{head}{r.reason}")
            continue
        lines.append(
            f"{head}{r.logits_rel_rms:>10.2e}{r.gate:>10.2e}{100 * r.label_agreement:>10.2f}{r.p50_ms:>9.1f}"
            + (f"  {r.reason}" if r.reason else "")
        )
    failed = sum(r.status == "FAIL" for r in report.rows)
    lines.append(f"{failed} row(s) failed" if failed else "every row that can run here passed")
    return "\n".join(lines)


def document(facts: Dict[str, object], report: Optional["SelfTestReport"] = None) -> Dict[str, object]:
    """The ``--json`` document: the facts, and the self-test under ``"self_test"`` when it ran."""
    doc = dict(facts)
    if report is not None:
        doc["self_test"] = report.to_dict()
    return doc
