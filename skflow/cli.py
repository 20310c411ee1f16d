"""The ``skflow`` command line: demo, fit, score, sample, predict.

Every estimator parameter is an option of ``skflow fit`` (``max_iter`` is
``--max-iter``), with the estimator's own docstring as help text. User
errors print one line and exit with status 1 (2 for a bad command line);
models are written with :func:`skflow.save`, so ``skflow score`` never
unpickles a file.

``--target`` makes a conditional model, p(y | X): it names the columns of
a data file that are y, the others being X in their order. The model file
holds the estimator only, as :func:`skflow.save` writes it from Python, so
``skflow score`` takes ``--target`` again to split its data file the same
way; ``skflow sample`` and ``skflow predict`` read a file of conditions.
"""

from __future__ import annotations

import argparse
import inspect
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
from .conditional import ConditionalFlowMatchingDensity
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
    header = int(read_header(path) is not None)
    with warnings.catch_warnings(), open(file, encoding="utf-8-sig") as handle:
        warnings.simplefilter("ignore")  # "input contained no data"
        try:
            return np.loadtxt(handle, delimiter=",", skiprows=header, ndmin=2)
        except ValueError:
            pass
    raise ValueError(f"{path}: {_first_bad_line(file, header)}")


def read_header(path: str) -> list[str] | None:
    """The column names of a CSV file with a header row, else None."""
    if Path(path).suffix == ".npy":
        return None
    with open(path, encoding="utf-8-sig") as handle:
        first = handle.readline().strip().split(",")
    if first == [""] or any(map(_is_number, first)):
        return None
    return [cell.strip() for cell in first]


def target_columns(text: str, path: str, n_columns: int) -> list[int]:
    """The 0-based indices of the columns ``--target`` names in ``path``.

    ``text`` is comma-separated column numbers (0-based) or names from the
    file's header row (a header has no numeric cell, so a number is always
    a position). y takes the columns in the order given.
    """
    header = read_header(path)
    columns = []
    for cell in (cell.strip() for cell in text.split(",")):
        if re.fullmatch(r"[+-]?\d+", cell):
            column = int(cell)
        elif not cell:
            raise ValueError(f"--target {text!r} has an empty column name")
        elif header is None:
            raise ValueError(
                f"--target names column {cell!r}, but {path} has no header row: "
                "give column numbers (0-based)"
            )
        elif cell not in header:
            raise ValueError(f"--target: {path} has no column {cell!r} in its header")
        elif header.count(cell) > 1:
            raise ValueError(f"--target: {path} has two columns named {cell!r}")
        else:
            column = header.index(cell)
        if not 0 <= column < n_columns:
            raise ValueError(
                f"--target column {column} is not in {path}, whose {n_columns} "
                f"columns are numbered 0 to {n_columns - 1}"
            )
        if column in columns:
            raise ValueError(f"--target names column {column} twice")
        columns.append(column)
    if len(columns) == n_columns:
        raise ValueError(
            f"--target takes all {n_columns} columns of {path}: the conditions "
            "X need at least one"
        )
    return columns


def read_pairs(path: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """X and y from a data file: y the ``--target`` columns (1-D for one
    column), X the others in their order."""
    data = read_data(path)
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a table, not an array of {data.ndim} dims")
    targets = target_columns(target, path, data.shape[1])
    y = data[:, targets]
    return np.delete(data, targets, axis=1), (y[:, 0] if len(targets) == 1 else y)


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


def _check_sample_size(n_samples: int, n_columns: int, n_conditions=None) -> None:
    """Refuse a sample larger than half this machine's memory (for a
    conditional model, rows ``[y, x]`` for each of ``n_conditions``)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        memory = 2**34
    needed = n_samples * n_columns * (n_conditions or 1) * 8
    if needed > memory // 2:
        each = "" if n_conditions is None else f" for each of {n_conditions} rows"
        raise ValueError(
            f"-n {n_samples} samples of {n_columns} columns{each} take "
            f"{needed / 2**30:.3g} GiB, more than half this machine's memory; "
            "draw fewer at a time (with other --random-state values)"
        )


def _fit(args) -> None:
    _check_output(args.output)
    params = {
        name: _parse_value(value)
        for name, value in vars(args).items()
        if name in FlowMatchingDensity().get_params() and value is not None
    }
    if args.target is None:
        X = read_data(args.data)
        estimator = FlowMatchingDensity(**params).fit(X)
        shape = f"{X.shape[0]} rows x {X.shape[1]} columns"
    else:
        unconditional = set(params) - set(ConditionalFlowMatchingDensity().get_params())
        if unconditional:
            options = ", ".join("--" + name.replace("_", "-") for name in unconditional)
            raise ValueError(
                f"{options}: not an option of a conditional model (--target)"
            )
        X, y = read_pairs(args.data, args.target)
        estimator = ConditionalFlowMatchingDensity(**params).fit(X, y)
        shape = (
            f"{len(X)} rows: {estimator.n_targets_} target and "
            f"{estimator.n_features_in_} condition columns"
        )
    save(estimator, args.output)
    print(f"fitted on {shape}; wrote {args.output}")


def _load(path: str, conditional: bool, why: str):
    """The model in ``path``; a user error if it is (not) conditional."""
    estimator = load(path)
    if isinstance(estimator, ConditionalFlowMatchingDensity) != conditional:
        kind = "an unconditional" if conditional else "a conditional"
        raise ValueError(f"{path} holds {kind} model: {why}")
    return estimator


def _score(args) -> None:
    _check_output(args.output)
    if args.target is None:
        estimator = _load(
            args.model,
            False,
            "give --target with the columns of DATA that are y, as at fit time",
        )
        write_data(estimator.score_samples(read_data(args.data)), args.output)
        return
    estimator = _load(args.model, True, "drop --target, every column of DATA is scored")
    X, y = read_pairs(args.data, args.target)
    write_data(estimator.score_samples(X, y), args.output)


def _sample(args) -> None:
    _check_output(args.output)
    if args.conditions is None:
        estimator = _load(
            args.model,
            False,
            "give a file of conditions, one row each: skflow sample MODEL "
            "CONDITIONS -n N",
        )
        _check_sample_size(args.n_samples, estimator.n_features_in_)
        draws = estimator.sample(args.n_samples, random_state=args.random_state)
        write_data(draws, args.output)
        return
    estimator = _load(
        args.model, True, f"it takes no conditions, drop {args.conditions}"
    )
    X = read_data(args.conditions)
    _check_sample_size(
        args.n_samples, estimator.n_targets_ + estimator.n_features_in_, len(X)
    )
    draws = estimator.sample(X, args.n_samples, random_state=args.random_state)
    # Row i * N + j: draw j given row i of the conditions.
    write_data(draws.reshape(-1, estimator.n_targets_), args.output)


def _predict(args) -> None:
    _check_output(args.output)
    estimator = _load(
        args.model, True, "predict is for models of p(y | X) (skflow fit --target)"
    )
    means = estimator.predict(read_data(args.conditions), args.n_samples)
    write_data(means, args.output)


def _demo(args) -> None:
    from ._demo import run_demo

    run_demo(args.output, max_iter=args.max_iter)


_TARGET_HELP = (
    "the columns of DATA that are y, comma-separated: numbers from 0 or names "
    "from its header row (--target 3 or --target price,volume). The model is "
    "then ConditionalFlowMatchingDensity, p(y | X), X being the other columns "
    "in their order; its dequantize defaults to False."
)


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
        "header row, or .npy) and save it with skflow.save; with --target, fit "
        "ConditionalFlowMatchingDensity, the density of those columns given "
        "the others. Every estimator parameter is an option; tuples are "
        "comma-separated (--hidden-layer-sizes 64,64), None is 'none'.",
    )
    fit.add_argument("data", help="training data: CSV or .npy, one row per sample")
    fit.add_argument("-o", "--output", required=True, help="model file to write")
    fit.add_argument("--target", help=_TARGET_HELP)
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
        "one per line (CSV), or as .npy. For a conditional model, --target "
        "names the columns of DATA that are y, as at fit time, and each line "
        "is log p(y | x) of a row.",
    )
    score.add_argument("model", help="a model written by skflow fit or skflow.save")
    score.add_argument("data", help="points to score: CSV or .npy")
    score.add_argument(
        "-o", "--output", help="CSV or .npy file (default: standard output)"
    )
    score.add_argument(
        "--target",
        help="conditional model: the columns of DATA that are y, as given to "
        "skflow fit --target (the others are X, in their order)",
    )
    score.set_defaults(run=_score)

    sample = commands.add_parser(
        "sample",
        help="draw samples from a model",
        description="Draw N samples from MODEL, one row each (CSV), or as .npy. "
        "A conditional model needs CONDITIONS, a file of rows of X: it draws N "
        "targets y given each row, N lines per row, those of its first row "
        "first.",
    )
    sample.add_argument("model", help="a model written by skflow fit or skflow.save")
    sample.add_argument(
        "conditions",
        nargs="?",
        help="conditional model: rows of X, CSV or .npy (the columns of the "
        "training data other than --target, in their order)",
    )
    sample.add_argument(
        "-n",
        "--n-samples",
        type=int,
        required=True,
        help="number of samples (per row of CONDITIONS)",
    )
    sample.add_argument(
        "-o", "--output", help="CSV or .npy file (default: standard output)"
    )
    sample.add_argument(
        "--random-state", type=int, default=None, help="seed for reproducible samples"
    )
    sample.set_defaults(run=_sample)

    predict = commands.add_parser(
        "predict",
        help="conditional mean of y given each row of CONDITIONS",
        description="Write E[y | x] under a conditional MODEL for each row x of "
        "CONDITIONS, one line each (CSV), or as .npy: the mean of N draws "
        "given the row, from a noise the model keeps, so a row's prediction "
        "is the same in every call.",
    )
    predict.add_argument("model", help="a model written by skflow fit --target")
    predict.add_argument(
        "conditions", help="rows of X, CSV or .npy (as for skflow sample)"
    )
    predict.add_argument(
        "-n",
        "--n-samples",
        type=int,
        default=inspect.signature(ConditionalFlowMatchingDensity.predict)
        .parameters["n_samples"]
        .default,
        help="draws per row, rounded up to an even number (default: %(default)s)",
    )
    predict.add_argument(
        "-o", "--output", help="CSV or .npy file (default: standard output)"
    )
    predict.set_defaults(run=_predict)
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
