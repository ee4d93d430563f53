"""The ``kernelens`` command: list experiments, run one, or build the report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kernelens",
        description="Neural networks as kernel machines: run the reproduced experiments.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments")
    run = sub.add_parser("run", help="run one experiment and write its report")
    run.add_argument("name", help="experiment name (see `kernelens list`)")
    rep = sub.add_parser("report", help="run experiments (default: all) and write one report")
    rep.add_argument("names", nargs="*", help="experiment names (default: all)")
    for q in (run, rep):
        q.add_argument("--quick", action="store_true", help="small, fast versions (CI-sized)")
        q.add_argument("--out", default="reports", help="output directory (default: reports)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 if any experiment failed)."""
    args = _parser().parse_args(argv)
    from .experiments import get_experiment, list_experiments
    from .report import run_entries, write_report

    if args.command == "list":
        for exp in list_experiments():
            print(f"{exp.name:32s} {exp.area:8s} {exp.title}")
        return 0
    if args.command == "run":
        try:
            get_experiment(args.name)
        except ValueError as exc:
            print(f"kernelens: {exc}", file=sys.stderr)
            return 2
        names = [args.name]
    else:
        names = list(args.names)
        for n in names:
            try:
                get_experiment(n)
            except ValueError as exc:
                print(f"kernelens: {exc}", file=sys.stderr)
                return 2
    entries = run_entries(names, quick=args.quick)
    path = write_report(entries, args.out)
    failed = [e.name for e in entries if e.error is not None]
    for e in entries:
        status = "FAILED" if e.error else "ok"
        print(f"{e.name:32s} {status:6s} {e.seconds:7.1f} s")
    print(f"report: {path.resolve()}")
    if failed:
        print(
            f"kernelens: {len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
