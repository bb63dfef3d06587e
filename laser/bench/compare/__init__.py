"""`laser compare`: LASeR against every baseline over seeds, with tests, plots and analyses.

Wire into the CLI with::

    from laser.bench.compare import add_compare_parser, compare_main
    add_compare_parser(subparsers)        # then dispatch "compare" to compare_main(args)
"""

from __future__ import annotations

import argparse


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``compare`` sub-command to an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser("compare", help="methods x seeds on the embedded benchmark: tables, paired tests, plots")
    p.add_argument(
        "--config",
        help="YAML with the keys `laser compare --explain` lists (settings nested; a "
        "user: section runs your own laser train config and test set, see docs/compare.md)",
    )
    p.add_argument("--explain", action="store_true", help="print every config key: type, default, range, help")
    p.add_argument("overrides", nargs="*", help="dotted overrides as in laser train, e.g. settings.iterations=2")
    p.add_argument("--out", help="report folder (default compare_out); reruns skip finished (method, seed) jobs")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    p.add_argument("--methods", type=_names, help="comma-separated methods (default: all; see docs/compare.md)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run (seconds per method)")
    p.add_argument("--noise", type=_floats, help="noise sigmas, e.g. 0,0.3: reruns --analysis-methods with noisy RMs")
    p.add_argument("--noise-rm", help="RM whose scores get the noise, or 'all' (default)")
    p.add_argument("--add-rm", help="an RM that joins the run late (with --add-at)")
    p.add_argument("--add-at", type=int, help="global step at which --add-rm joins")
    p.add_argument("--analysis-methods", type=_names, help="methods of the noise / add-RM analyses")
    p.add_argument(
        "--judged",
        action="store_true",
        default=None,
        help="also: prompts without gold, LASeR vs a baseline, judge win rate",
    )
    p.add_argument("--judged-baseline", help="the baseline of --judged (default score_ensemble)")
    p.add_argument(
        "--step-cost",
        help="a `benchmarks/step_cost.py --json` file: adds the per-step time and memory "
        "of LASeR vs the ensembles with RMs of policy-like cost to the report",
    )
    return p


def compare_main(args) -> int:
    """Run `laser compare` from parsed arguments; returns the exit code (2 for a bad config)."""
    import dataclasses
    import importlib
    import sys

    from laser.bench.compare.runner import CompareConfig, load_compare_config, run_compare
    from laser.bench.runs import QUICK

    if args.explain:
        from laser.config import explain

        print("\n".join(explain(CompareConfig)))
        return 0
    try:  # the statistics are scipy's (the `stats` extra): say so before any work
        importlib.import_module("laser.bench.compare.stats")
    except ImportError as exc:
        print(f"laser compare: {exc}", file=sys.stderr)
        return 2
    # flags are CompareConfig keys by name (None = not given); dotted overrides go through the same loader
    flags = {
        f.name: getattr(args, f.name, None)
        for f in dataclasses.fields(CompareConfig)
        if f.name not in ("settings", "user")
    }
    try:
        cfg = load_compare_config(
            args.config, getattr(args, "overrides", None) or (), **flags, settings=QUICK if args.quick else None
        )
    except (ValueError, OSError) as exc:
        print(f"laser compare: {exc}", file=sys.stderr)
        return 2
    run_compare(cfg)
    return 0
