"""What the benchmark scripts share: where results go and what heads them,
timing, a study's recipe, and splitting a long study into shards."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import time
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


def with_recipe(
    recipe: Recipe, base: type[FlowMatchingDensity] = FlowMatchingDensity
) -> type[FlowMatchingDensity]:
    """A subclass of ``base`` that trains with ``recipe``: how a study varies
    the training constants without touching skflow's modules."""
    return type(base.__name__, (base,), {"_recipe": recipe})


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
