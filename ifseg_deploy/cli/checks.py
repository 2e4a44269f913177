"""``ifseg-deploy checks``: what works on this machine (runtimes, CPU features, GPUs), and with
``--self-test`` whether every export and backend available here gives the PyTorch results."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import IFSegError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "checks",
        help="show versions, runtimes, CPU flags, GPUs and cached models; --self-test exports and runs a small "
        "random model on every available backend",
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="export a small random-weight model to every format available here and run it on every backend, "
        "against PyTorch fp32 (about a minute on 2 CPU cores); exit status 1 when a row fails",
    )
    p.add_argument("--json", action="store_true", help="print everything as one JSON document (for bug reports)")
    return p


def run(args) -> int:
    from ..checks.environment import collect
    from ..checks.report import document, format_facts, format_selftest

    facts = collect()
    if not args.json:
        print(format_facts(facts), flush=True)
    report = None
    if args.self_test:
        try:
            from ..checks.selftest import run_selftest
        except ImportError as e:  # the exporter's packages: the facts above say which are missing
            raise IFSegError(
                f'the self-test exports models and needs {e.name}: pip install "ifseg-deploy[cpu]"'
            ) from None

        if not args.json:
            print()
        report = run_selftest(progress=lambda label: print(f"self-test: {label}", file=sys.stderr, flush=True))
        if not args.json:
            print(format_selftest(report))
    if args.json:
        print(json.dumps(document(facts, report), indent=2))
    return 0 if report is None or report.ok else 1
