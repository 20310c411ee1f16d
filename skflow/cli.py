"""The ``skflow`` command line: demo, fit, score, sample.

Every estimator parameter is an option of ``skflow fit`` (``max_iter`` is
``--max-iter``), with the estimator's own docstring as help text. User
errors print one line and exit with status 1 (2 for a bad command line);
models are written with :func:`skflow.save`, so ``skflow score`` never
unpickles a file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._docstrings import numpydoc_section
from ._files import write_atomically
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
    """Rows of numbers from a .npy file or a CSV file (header optional).

    The first row of a CSV file is a header only if none of its cells is a
    number; a byte-order mark is ignored. Errors name the file's line.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False)  # never unpickle user data
    with open(file, encoding="utf-8-sig") as handle:
        first = handle.readline().strip().split(",")
    header = int(bool(first != [""] and not any(map(_is_number, first))))
    with warnings.catch_warnings(), open(file, encoding="utf-8-sig") as handle:
        warnings.simplefilter("ignore")  # "input contained no data"
        try:
            return np.loadtxt(handle, delimiter=",", skiprows=header, ndmin=2)
        except ValueError:
            pass
    raise ValueError(f"{path}: {_first_bad_line(file, header)}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _first_bad_line(file: Path, header: int) -> str:
    """Why numpy could not read ``file``, at the line (1-based) at fault."""
    n_columns = None
    with open(file, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            cells = line.strip().split(",")
            if number <= header or cells == [""]:
                continue
            bad = [cell.strip() for cell in cells if not _is_number(cell)]
            if bad:
                what = repr(bad[0]) if bad[0] else "an empty cell"
                return f"line {number}: {what} is not a number"
            if n_columns is not None and len(cells) != n_columns:
                return (
                    f"line {number} has {len(cells)} columns, "
                    f"the lines above {n_columns}"
                )
            n_columns = len(cells)
    return "not a table of numbers"


def write_data(array: np.ndarray, path: str | None) -> None:
    """Write to .npy, to CSV, or (no path) to standard output as CSV.

    A file is written to a temporary file beside it and renamed once
    complete, so an interrupted write leaves no partial output.
    """
    if path is None:
        np.savetxt(sys.stdout, array, delimiter=",", fmt="%.17g")
        return
    if Path(path).suffix == ".npy":
        write_atomically(path, lambda file: np.save(file, array))
    else:
        write_atomically(
            path, lambda file: np.savetxt(file, array, delimiter=",", fmt="%.17g")
        )


def _check_output(path: str | None) -> None:
    """Refuse an output the command could not write, before any work."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: no folder {str(folder)!r} to write it in")
    if Path(path).is_dir() or not os.access(folder, os.W_OK):
        raise PermissionError(f"{path}: cannot write there")


def _check_sample_size(n_samples: int, n_features: int) -> None:
    """Refuse a sample larger than half this machine's memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        memory = 2**34
    needed = n_samples * n_features * 8
    if needed > memory // 2:
        raise ValueError(
            f"-n {n_samples} samples of {n_features} features take "
            f"{needed / 2**30:.3g} GiB, more than half this machine's memory; "
            "draw fewer at a time (with other --random-state values)"
        )


def _fit(args) -> None:
    _check_output(args.output)
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
    _check_output(args.output)
    write_data(load(args.model).score_samples(read_data(args.data)), args.output)


def _sample(args) -> None:
    _check_output(args.output)
    estimator = load(args.model)
    _check_sample_size(args.n_samples, estimator.n_features_in_)
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
    except (
        ValueError,
        TypeError,
        OSError,
        ArithmeticError,
        MemoryError,
        SolveFailedError,
    ) as error:
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
