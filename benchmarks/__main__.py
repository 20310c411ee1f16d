"""Regenerate the headline results and the README's figure.

From the repository root, on an otherwise idle machine:

    python -m benchmarks                                     # all, in order
    python -m benchmarks density_quality anomaly_detection   # only these
    python -m benchmarks --list

``density_quality`` times a fit against skflow 0.3.2 in its own
environment: set ``SKFLOW_OLD_PYTHON`` first (its docstring says how).

Each step runs in a process of its own. The studies (``benchmarks/studies/``)
are not run: each docstring there gives its commands.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
HEADLINES = (
    "likelihood_engine",
    "density_quality",
    "conditional_density",
    "anomaly_detection",
    "far_away_points",
    "scaling",
)
DEMO_FIGURE = "docs/_static/demo.png"
# name: the command, run from the repository root
STEPS = {name: [sys.executable, "-m", f"benchmarks.{name}"] for name in HEADLINES}
STEPS["demo"] = [sys.executable, "-m", "skflow", "demo", "-o", DEMO_FIGURE]
# Steps that time against skflow 0.3.2 need its environment (the step's
# docstring says how to make it): checked before anything runs.
NEEDS_OLD_PYTHON = {"density_quality"}


def summary(name: str) -> str:
    """A step's one-line description: its script's first docstring line."""
    if name == "demo":
        return f"the README's figure, {DEMO_FIGURE} (skflow demo)"
    docstring = ast.get_docstring(ast.parse((HERE / f"{name}.py").read_text()))
    return docstring.splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("steps", nargs="*", help="steps to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the steps")
    args = parser.parse_args()
    if args.list:
        for name in STEPS:
            print(f"{name}: {summary(name)}")
        return
    unknown = [name for name in args.steps if name not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; --list lists them")
    steps = args.steps or list(STEPS)
    needing = [name for name in steps if name in NEEDS_OLD_PYTHON]
    if needing and not os.environ.get("SKFLOW_OLD_PYTHON"):
        parser.error(
            f"{', '.join(needing)} times against skflow 0.3.2: set "
            "SKFLOW_OLD_PYTHON to the python of its environment (the step's "
            "docstring says how to make it)"
        )
    for name in steps:
        print(f"== {name}: python {' '.join(STEPS[name][1:])}", flush=True)
        subprocess.run(STEPS[name], check=True, cwd=HERE.parent)


if __name__ == "__main__":
    main()
