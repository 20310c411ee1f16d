"""What the benchmark scripts share: where results go and what heads them,
timing, a study's recipe, running an older skflow, and splitting a long
study into shards."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import skflow
from skflow import FlowMatchingDensity
from skflow._recipe import Recipe

RESULTS = Path(__file__).parent / "results"


def environment(module: str) -> dict:
    """The head of a results file: the machine, the versions, the command
    (``module`` is the script's ``__spec__.name``)."""
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "skflow": skflow.__version__,
        "command": f"python -m {module}",
    }


def environment_line(results: dict) -> str:
    """``environment``'s head as a sentence of the Markdown report."""
    return (
        f"Machine: {results['machine']}; torch {results['torch']}, "
        f"{results['threads']} threads; skflow {results['skflow']}. "
        f"Command: `{results['command']}`."
    )


def write_markdown(name: str, lines: Sequence[str]) -> None:
    """Write ``results/<name>.md`` and print it."""
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def write_results(name: str, results: dict | list, lines: Sequence[str]) -> None:
    """Write ``results/<name>.json`` for machines and ``<name>.md`` for people."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(name, lines)


def timed(function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)`` and the seconds it took."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


@contextlib.contextmanager
def with_field(estimator, field):
    """``estimator`` scoring with ``field`` in place of its ``vector_field_``
    (one member of a mixture, or a mixture of some of them)."""
    whole, estimator.vector_field_ = estimator.vector_field_, field
    try:
        yield estimator
    finally:
        estimator.vector_field_ = whole


def with_recipe(
    recipe: Recipe, base: type[FlowMatchingDensity] = FlowMatchingDensity
) -> type[FlowMatchingDensity]:
    """A subclass of ``base`` that trains with ``recipe``: how a study varies
    the training constants without touching skflow's modules."""
    return type(base.__name__, (base,), {"_recipe": recipe})


def run_isolated(
    python: str, arguments: Sequence[str], folder: Path
) -> subprocess.CompletedProcess:
    """Run ``python -I *arguments`` in ``folder``, its stdout captured (its
    stderr, where progress goes, passes through): in
    isolated mode, and without PYTHONPATH, neither this tree nor the caller's
    path is on its ``sys.path``, so another environment's skflow (0.3.2 for
    the comparisons against it) is the one imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [python, "-I", *arguments],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=env,
    )


def shard(text: str) -> tuple[int, int]:
    """``--shard i/n``: this process runs every n-th job, from the i-th."""
    index, count = map(int, text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"{text!r} is not i/n with 0 <= i < n")
    return index, count


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else path.open(mode)


def read_runs(path: Path) -> list[dict]:
    """The runs of a JSON Lines file (gzipped if its name ends in .gz)."""
    with _open(path, "rt") as file:
        return [json.loads(line) for line in file]


def run_shard(
    jobs: Sequence[tuple],
    this_shard: tuple[int, int],
    run_one: Callable[..., dict | list[dict]],
    runs: Path,
    key: Sequence[str],
) -> None:
    """Run this shard's jobs that ``runs`` does not hold yet, appending each
    result as it comes (a stopped study resumes where it stopped).

    A job is the tuple of the ``key`` fields of its result; ``run_one`` may
    return one result or a list of results that share those fields. Torch
    gets one thread, so that two shards share a 2-core machine.
    """
    torch.set_num_threads(1)
    done = set()
    if runs.exists():
        done = {tuple(run[field] for field in key) for run in read_runs(runs)}
    index, count = this_shard
    for job in jobs[index::count]:
        if job in done:
            continue
        results = run_one(*job)
        if isinstance(results, dict):
            results = [results]
        with _open(runs, "at") as file:
            file.writelines(json.dumps(result) + "\n" for result in results)


def sharded_study(
    module: str,
    description: str,
    name: str,
    *,
    jobs: Callable[[], Sequence[tuple]],
    run_one: Callable[..., dict | list[dict]],
    runs: Path,
    key: Sequence[str],
    report: Callable[[dict], Sequence[str]],
) -> None:
    """The command line of a study run in shards: ``--shard i/n`` runs every
    n-th of ``jobs()`` (:func:`run_shard`), ``--write`` writes
    ``results/<name>.{json,md}`` from ``runs`` with ``report``."""
    warnings.filterwarnings("ignore", category=UserWarning)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shard", type=shard, help="i/n: run every n-th job")
    parser.add_argument("--write", action="store_true", help="write the results")
    args = parser.parse_args()
    if args.shard:
        run_shard(list(jobs()), args.shard, run_one, runs, key)
    if args.write:
        results = environment(module)
        results["command"] += " --shard 0/2 & ... --shard 1/2; ... --write"
        results["threads"] = 1
        results["runs"] = read_runs(runs)
        write_results(name, results, report(results))
