"""The ``skflow`` command line: demo, fit, score, sample.

Every estimator parameter is an option of ``skflow fit`` (``max_iter`` is
``--max-iter``), with the estimator's own docstring as help text. User
errors print one line and exit with status 1 (2 for a bad command line);
models are written with :func:`skflow.save`, so ``skflow score`` never
unpickles a file.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._docstrings import numpydoc_section
from ._ode import SolveFailedError
from ._version import __version__
from .density import FlowMatchingDensity
from .persistence import load, save

__all__ = ["main"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a one-line error instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parameter_docs(docstring: str) -> dict[str, str]:
    """Each parameter's numpydoc entry (type line and text) as one paragraph."""
    docs: dict[str, list[str]] = {}
    name = None
    for line in numpydoc_section(docstring, "Parameters").splitlines():
        entry = re.match(r"    (\w+) : (.*)", line)
        if entry:
            name = entry.group(1)
            docs[name] = [f"({entry.group(2).strip()})"]
        elif name and line.strip():
            docs[name].append(line.strip())
    return {name: " ".join(words) for name, words in docs.items()}


def _parse_value(text: str):
    """A command-line string as None, bool, int, float, tuple ("64,64") or str."""
    if text.lower() == "none":
        return None
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part.strip())
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_data(path: str) -> np.ndarray:
    """Rows of numbers from a .npy file or a CSV file (header optional)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False)  # never unpickle user data
    with open(file) as handle:
        first_line = handle.readline()
    try:
        [float(cell) for cell in first_line.split(",")]
        header = 0
    except ValueError:
        header = 1  # the first row is not numbers: column names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data"
        try:
            return np.loadtxt(file, delimiter=",", skiprows=header, ndmin=2)
        except ValueError as error:
            message = str(error).split(";")[0]  # drop numpy's usecols advice
            raise ValueError(f"{path}: {message}") from None


def write_data(array: np.ndarray, path: str | None) -> None:
    """Write to .npy, to CSV, or (no path) to standard output as CSV."""
    if path is not None and Path(path).suffix == ".npy":
        np.save(path, array)
    else:
        np.savetxt(
            sys.stdout if path is None else path, array, delimiter=",", fmt="%.17g"
        )


def _fit(args) -> None:
    X = read_data(args.data)
    params = {
        name: _parse_value(value)
        for name, value in vars(args).items()
        if name in FlowMatchingDensity().get_params() and value is not None
    }
    estimator = FlowMatchingDensity(**params).fit(X)
    save(estimator, args.output)
    n_rows, n_columns = X.shape
    print(f"fitted on {n_rows} rows x {n_columns} columns; wrote {args.output}")


def _score(args) -> None:
    write_data(load(args.model).score_samples(read_data(args.data)), args.output)


def _sample(args) -> None:
    estimator = load(args.model)
    write_data(
        estimator.sample(args.n_samples, random_state=args.random_state), args.output
    )


def _demo(args) -> None:
    from ._demo import run_demo

    run_demo(args.output, max_iter=args.max_iter)


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="skflow",
        description="Flow-matching density estimation from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"skflow {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_OneLineParser
    )

    demo = commands.add_parser(
        "demo",
        help="fit two moons; compare with KDE and a GMM; draw a PNG",
        description="Fit FlowMatchingDensity on two moons (generated, nothing "
        "is downloaded), print its held-out log-likelihood next to "
        "KernelDensity and GaussianMixture, and draw the data, the learned "
        "density and samples to a PNG (needs matplotlib: pip install "
        "'skflow[plot]').",
    )
    demo.add_argument(
        "-o",
        "--output",
        default="skflow-demo.png",
        help="PNG to write (default: %(default)s)",
    )
    demo.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="training steps (default: the estimator's)",
    )
    demo.set_defaults(run=_demo)

    fit = commands.add_parser(
        "fit",
        help="fit a model on DATA and save it",
        description="Fit FlowMatchingDensity on DATA (CSV with or without a "
        "header row, or .npy) and save it with skflow.save. Every estimator "
        "parameter is an option; tuples are comma-separated "
        "(--hidden-layer-sizes 64,64), None is 'none'.",
    )
    fit.add_argument("data", help="training data: CSV or .npy, one row per sample")
    fit.add_argument("-o", "--output", required=True, help="model file to write")
    docs = parameter_docs(FlowMatchingDensity.__doc__)
    for name in FlowMatchingDensity().get_params():
        fit.add_argument(
            "--" + name.replace("_", "-"), dest=name, help=docs[name].replace("%", "%%")
        )
    fit.set_defaults(run=_fit)

    score = commands.add_parser(
        "score",
        help="log density of each row of DATA",
        description="Write the log density of each row of DATA under MODEL, "
        "one per line (CSV), or as .npy.",
    )
    score.add_argument("model", help="a model written by skflow fit or skflow.save")
    score.add_argument("data", help="points to score: CSV or .npy")
    score.add_argument(
        "-o", "--output", help="CSV or .npy file (default: standard output)"
    )
    score.set_defaults(run=_score)

    sample = commands.add_parser(
        "sample",
        help="draw samples from a model",
        description="Draw N samples from MODEL, one row each (CSV), or as .npy.",
    )
    sample.add_argument("model", help="a model written by skflow fit or skflow.save")
    sample.add_argument(
        "-n", "--n-samples", type=int, required=True, help="number of samples"
    )
    sample.add_argument(
        "-o", "--output", help="CSV or .npy file (default: standard output)"
    )
    sample.add_argument(
        "--random-state", type=int, default=None, help="seed for reproducible samples"
    )
    sample.set_defaults(run=_sample)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"skflow: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    format_warning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, ArithmeticError, SolveFailedError) as error:
        message = " ".join(str(error).split())
        print(f"skflow {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # fit handles its own; this is scoring or I/O
        print(f"skflow {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = format_warning
    return 0


if __name__ == "__main__":
    sys.exit(main())
