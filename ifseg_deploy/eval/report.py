"""Human-readable summary and the JSON report of an evaluation."""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence

from ..fileio import atomic_path
from .metrics import ClassScores


def _pct(x: float) -> str:
    return "   nan" if math.isnan(x) else f"{100 * x:6.2f}"


def summary_line(scores: ClassScores, title: str) -> str:
    """``title: mIoU x  mAcc y  aAcc z`` in percent."""
    return (
        f"{title}: mIoU {_pct(scores.miou).strip()}  mAcc {_pct(scores.macc).strip()}  aAcc {_pct(scores.aacc).strip()}"
    )


def format_scores(scores: ClassScores, names: Sequence[str], title: str) -> str:
    """Per-class IoU / Acc table followed by the summary line (percentages)."""
    width = max([len("class")] + [len(n) for n in names])
    lines: List[str] = [f"{'#':>4}  {'class':<{width}}     IoU     Acc"]
    for c, name in enumerate(names):
        lines.append(f"{c:>4}  {name:<{width}}  {_pct(scores.iou[c])}  {_pct(scores.acc[c])}")
    lines.append(summary_line(scores, title))
    return "\n".join(lines)


def build_report(
    scores: ClassScores, names: Sequence[str], info: Dict[str, Any], plain: Optional[ClassScores] = None
) -> Dict[str, Any]:
    """The JSON document: run settings, dataset-level metrics (fractions in [0, 1]) and areas per class."""
    report = dict(info)
    report.update(scores.to_dict(names))
    if plain is not None:
        report["without_knn"] = plain.to_dict(names)
    return report


def write_report(path: str, report: Dict[str, Any]) -> None:
    """Write the JSON report atomically (strict JSON: undefined ratios are null)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(report, fh, indent=2, allow_nan=False)
            fh.write("\n")
