"""The ``kernelens`` command: list experiments, run some, or build the report of all of them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="kernelens",
        description="Neural networks as kernel machines: run the reproduced experiments.",
    )
    p.add_argument("--version", action="version", version=f"kernelens {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments")
    run = sub.add_parser(
        "run", help="run experiments and add them to the report in --out (others are kept)"
    )
    run.add_argument("names", nargs="+", metavar="name", help="experiment names (`kernelens list`)")
    rep = sub.add_parser(
        "report", help="run experiments (default: all available) and add them to the report"
    )
    rep.add_argument("names", nargs="*", metavar="name", help="experiment names (default: all)")
    for q in (run, rep):
        q.add_argument("--quick", action="store_true", help="small, fast versions (CI-sized)")
        q.add_argument("--out", default="reports", help="output directory (default: reports)")
    return p


def _err(msg: str) -> None:
    print(f"kernelens: {msg}", file=sys.stderr, flush=True)


def _list() -> int:
    from .experiments import list_experiments
    from .experiments.registry import unavailable_modules

    for exp in list_experiments():
        note = ""
        if exp.requires:
            missing = exp.missing
            extras = ",".join(exp.extras)
            note = (
                f"  [needs kernelens[{extras}]: {', '.join(missing)} not installed]"
                if missing
                else f"  [kernelens[{extras}]]"
            )
        print(f"{exp.name:32s} {exp.area:8s} {exp.title}{note}")
    for module, package in unavailable_modules().items():
        print(f"{'?':32s} {'-':8s} {module} not loaded: needs {package}, not installed")
    return 0


def _estimate(exp, previous: dict[str, float]) -> str:
    if exp.name in previous:
        return f"the last full run in this --out took {previous[exp.name] / 60:.1f} min"
    if exp.full_minutes is not None:
        return (
            f"roughly {exp.full_minutes:g} min on 2 CPU cores (estimated from the quick mode, "
            "not measured)"
        )
    return "no estimate recorded for its full mode (quick mode takes seconds: --quick)"


def _run(names: list[str], *, quick: bool, out_dir: str, all_available: bool) -> int:
    from .experiments import get_experiment, list_experiments
    from .report import check_out_dir, run_entries, write_report
    from .report.json_writer import read_results

    try:
        exps = [get_experiment(n) for n in names] if names else list_experiments()
    except ValueError as exc:
        _err(str(exc))
        return 2
    try:
        out = check_out_dir(out_dir)
    except ValueError as exc:
        _err(str(exc))
        return 2
    unavailable = [e for e in exps if e.missing]
    for e in unavailable:
        msg = f"experiment {e.name!r} needs {', '.join(e.missing)}, which is not installed: "
        msg += f'pip install "kernelens[{",".join(e.extras)}]"'
        _err(("skipped " if all_available else "") + msg)
    if unavailable and not all_available:
        return 2
    exps = [e for e in exps if not e.missing]
    if not quick:
        previous = {
            r["name"]: r["seconds"]
            for r in read_results(out)
            if not r.get("quick", True) and r.get("error") is None
        }
        for e in exps:
            print(f"{e.name}: full mode; {_estimate(e, previous)}", flush=True)

    def done(e) -> None:
        status = "FAILED" if e.error else "ok"
        print(f"{e.name:32s} {status:6s} {e.seconds:7.1f} s", flush=True)

    entries = run_entries([e.name for e in exps], quick=quick, on_done=done) if exps else []
    path = write_report(entries, out)
    print(f"report: {Path(path).resolve()}", flush=True)
    failed = [e.name for e in entries if e.error is not None]
    if failed:
        _err(f"{len(failed)} experiment(s) failed: {', '.join(failed)}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 if an experiment failed, 2 for bad
    input: an unknown name, an unusable --out, a missing optional package)."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list()
    return _run(
        list(args.names), quick=args.quick, out_dir=args.out, all_available=args.command == "report"
    )


if __name__ == "__main__":
    sys.exit(main())
