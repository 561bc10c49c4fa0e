"""``python -m bnb_api.conformance --backend NAME --device DEV [--ops ...] [--quick|--full] [--report DIR]``.

Runs the conformance suite on the kernels backend NAME registered for DEV's device type, prints a
progress bar and a verdict, writes ``conformance.json`` and ``conformance.md`` into DIR, and exits
with status 1 if any cell failed (2 if the suite could not run as asked).
"""

from __future__ import annotations

import argparse
import sys

from bnb_api.conformance.progress import ProgressBar


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bnb_api.conformance", description=__doc__.splitlines()[0].strip("`"),
    )  # fmt: skip
    parser.add_argument("--backend", required=True, help="the registered backend to test (e.g. cpu, reference)")
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda, cuda:1, xpu, ...)")
    parser.add_argument("--ops", nargs="+", default=None, help="ops to test (names or comma lists); default: all")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few examples, 3 blocksizes per op (default)")
    mode.add_argument("--full", action="store_true", help="every blocksize, 10x the examples, shrinking")
    parser.add_argument("--report", metavar="DIR", help="write conformance.json and conformance.md here")
    parser.add_argument("--known-failures", metavar="FILE", help="known failures file (default: packaged one)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the examples (default 0)")
    parser.add_argument("--no-bench", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--no-opcheck", action="store_true", help="skip torch.library.opcheck")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("bnb_api.conformance needs hypothesis: pip install 'hypothesis>=6.80'", file=sys.stderr)
        return 2
    from bnb_api.conformance import report
    from bnb_api.conformance.known import KnownFailures
    from bnb_api.conformance.runner import Runner, SuiteError

    ops = [o for part in args.ops for o in part.split(",") if o] if args.ops else None
    try:
        known = KnownFailures.load(args.backend, args.known_failures)
        bar = ProgressBar(sys.stderr)
        runner = Runner(
            args.backend, args.device, quick=not args.full, base_seed=args.seed, known=known,
            bench=not args.no_bench, progress=bar.update,
        )  # fmt: skip
        print(f"bnb_api conformance: backend {args.backend!r} on {runner.device} "
              f"({'full' if args.full else 'quick'} mode, seed {args.seed})", file=sys.stderr)  # fmt: skip
        result = runner.run(ops, opcheck=not args.no_opcheck)
    except (SuiteError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for r in result.failed:
        print(f"\n{r.status.upper()} {r.id}\n  {r.message}", file=sys.stderr)
    if args.report:
        paths = report.write(result, args.report, known.source)
        print(f"report: {paths[1]} and {paths[0]}", file=sys.stderr)
    print(result.verdict())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
