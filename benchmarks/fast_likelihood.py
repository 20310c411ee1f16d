"""Fast exact likelihood (issue 18): this tree's engine against skflow 0.3.2.

For d in (2, 16, 64), a model is fitted with the estimator's defaults
(``random_state=0``) on 10,000 rows (d = 2: two spirals, a sharp 2-D
density; d = 16 and 64: the Gaussian mixtures of
``studies/engine_levers.py``), then 10,000 test rows are scored by

(a) this tree's skflow (``score_samples``, after an untimed warm-up on 50
    rows), with its evaluations per row from ``skflow.solver_stats()`` and
    the ``likelihood_error_`` it measured when fitting;
(b) skflow 0.3.2 itself, fitted on the same rows with its own defaults, in
    a second Python environment (``--old-python``; a child process run
    from a temporary folder, so that it cannot import this tree);
(c) the straightforward engine (torchdiffeq dopri5 on the augmented state,
    the divergence by d autograd calls, rtol = atol = 1e-6) on (a)'s field,
    timed on 1,000 rows and extrapolated to 10,000 (it takes minutes at
    d = 64);
(d) the exact KDE (``KernelDensity(bandwidth="scott")`` on the first 5,000
    training rows, unstandardized).

Errors are against a float64 dopri5 solve at rtol = atol = 1e-9 of each
engine's own model (the straightforward engine: (a)'s model), on 300 of
the first 1,000 test rows (their values from the timed call) and on 60
far rows (fresh rows pushed 4 times as far from the training mean, scored
in a call of their own). The detector job: ``FlowMatchingOutlierDetector``
fitted on 5,000 rows of a 20-D mixture scores 100,000 rows, against the
exact KDE fitted on the same rows (and 0.3.2's detector).

Every engine runs with the same torch threads (``--threads``, by default
the machine's cores), printed in the results. Targets of issue 18: a
speed-up of at least 5 against 0.3.2, mean error <= 1e-3 and max error
<= 1e-2 nats.

skflow 0.3.2's environment (once):

    git worktree add /tmp/skflow-0.3.2 632d4a4 &&
      python -m venv /tmp/venv-0.3.2 &&
      /tmp/venv-0.3.2/bin/pip install torch==2.13.0 /tmp/skflow-0.3.2

Run from the repository root on an otherwise idle machine (about 30
minutes on 2 cores):

    python -m benchmarks.fast_likelihood --old-python /tmp/venv-0.3.2/bin/python

(or set SKFLOW_OLD_PYTHON). ``--quick`` runs tiny sizes on one thread, a
smoke test, and writes ``results/fast_likelihood_quick.*`` instead.
``--architecture hollow`` fits this tree's models with the HollowNet field
(0.3.2 and KDE as always) and writes ``results/fast_likelihood_hollow.*``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.neighbors import KernelDensity

import skflow
from benchmarks._common import (
    environment,
    environment_line,
    run_isolated,
    timed,
    write_results,
)
from benchmarks.known_densities import KNOWN_DENSITIES
from benchmarks.likelihood_engine import Counter, straightforward_log_density
from benchmarks.studies.engine_levers import mixture
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector
from skflow._likelihood_error import likelihood_error, rows_to_measure
from skflow._ode import log_likelihood

REPOSITORY = Path(__file__).resolve().parents[1]
N_TYPICAL, N_FAR, FAR_FACTOR = 300, 60, 4.0
N_KDE_ROWS = 5_000
N_SAMPLES = 2_000
REFERENCE_TOLERANCE = 1e-9
STRAIGHTFORWARD_TOLERANCE = 1e-6
SIZES = {
    # n_train, n_test, rows the straightforward engine is timed on,
    # detector's training rows, detector's scored rows
    "full": (10_000, 10_000, 1_000, 5_000, 100_000),
    "quick": (500, 200, 100, 500, 2_000),
}
QUICK_PARAMS = {"max_iter": 50, "hidden_layer_sizes": (32, 32)}

# Run by skflow 0.3.2's Python, from a temporary folder, in isolated mode
# (-I: neither this tree nor PYTHONPATH on sys.path). Imports numpy, torch
# and the skflow installed there only.
CHILD = r"""
import copy, json, sys, time, warnings
from pathlib import Path

import numpy as np
import torch

import skflow
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector
from skflow.ode import log_likelihood

folder, repository = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
if repository in Path(skflow.__file__).resolve().parents:
    sys.exit(f"the child imported this tree's skflow ({skflow.__file__})")
job = json.loads((folder / "job.json").read_text())
data = np.load(folder / "data.npz")
torch.set_num_threads(job["threads"])
params = job["params"]
for key in ("hidden_layer_sizes",):
    if key in params:
        params[key] = tuple(params[key])


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def log(message):
    print(f"  [skflow {skflow.__version__}] {message}", file=sys.stderr, flush=True)


def scored(est, X):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values, seconds = timed(est.score_samples, X)
    return values, seconds, sorted({str(w.message) for w in caught})


def reference(est, X):
    field64 = copy.deepcopy(est.vector_field_).double()
    z = torch.as_tensor((X - est.mean_) / est.scale_, dtype=torch.float64)
    with torch.no_grad():
        values, _ = log_likelihood(
            field64, z, est.path_.log_base_density, solver="dopri5",
            rtol=job["tolerance"], atol=job["tolerance"], max_evaluations=10**6,
        )
    return values.numpy() - np.log(est.scale_).sum()


out = {
    "skflow": skflow.__version__,
    "torch": torch.__version__,
    "python": sys.version.split()[0],
    "threads": torch.get_num_threads(),
}
kind = FlowMatchingDensity if job["kind"] == "density" else FlowMatchingOutlierDetector
est, out["fit_seconds"] = timed(kind(random_state=0, **params).fit, data["X_train"])
log(f"fitted in {out['fit_seconds']:.1f} s")
X_test = data["X_test"]
est.score_samples(X_test[:50])  # warm-up
scores, out["score_seconds"], out["warnings"] = scored(est, X_test)
out["solver_stats"] = getattr(est, "solver_stats_", None)
log(f"scored {len(X_test):,} rows in {out['score_seconds']:.1f} s")
np.save(folder / "scores.npy", scores)
if job["kind"] == "density":
    far, _, far_warnings = scored(est, data["far"])
    out["warnings"] = sorted(set(out["warnings"]) | set(far_warnings))
    np.save(folder / "far.npy", far)
    np.save(folder / "reference_typical.npy", reference(est, data["typical"]))
    np.save(folder / "reference_far.npy", reference(est, data["far"]))
    log("reference solved")
(folder / "result.json").write_text(json.dumps(out))
"""


def run_old(old_python: str, kind: str, arrays: dict, params: dict, threads: int):
    """Run the 0.3.2 child on ``arrays``; its result dict and its arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "data.npz", **arrays)
        job = {
            "kind": kind,
            "params": params,
            "threads": threads,
            "tolerance": REFERENCE_TOLERANCE,
        }
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "child.py").write_text(CHILD)
        run_isolated(old_python, ["child.py", str(folder), str(REPOSITORY)], folder)
        result = json.loads((folder / "result.json").read_text())
        saved = {path.stem: np.load(path) for path in folder.glob("*.npy")}
    return result, saved


def errors(values, reference) -> dict:
    error = np.abs(np.asarray(values, dtype=float) - reference)
    return {"mean": float(error.mean()), "max": float(error.max())}


def new_reference(est, X: np.ndarray) -> np.ndarray:
    """Float64 dopri5 at 1e-9 of ``est``'s own field, in data units."""
    field64 = copy.deepcopy(est.vector_field_).double()
    z = torch.as_tensor((X - est.mean_) / est.scale_, dtype=torch.float64)
    with torch.no_grad():
        values, _ = log_likelihood(
            field64,
            z,
            est.path_.log_base_density,
            solver="dopri5",
            rtol=REFERENCE_TOLERANCE,
            atol=REFERENCE_TOLERANCE,
            max_evaluations=10**6,
        )
    return values.numpy() - np.log(est.scale_).sum()


def scored(est, X: np.ndarray):
    """``est.score_samples(X)``, its seconds and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values, seconds = timed(est.score_samples, X)
    return values, seconds, sorted({str(w.message) for w in caught})


def stats_row(stats) -> dict:
    """What ``skflow.solver_stats()`` counted, per row where it can say."""
    row = {
        "n_evaluations": stats.n_evaluations,
        "n_divergence_evaluations": stats.n_divergence_evaluations,
        "n_chunks": stats.n_chunks,
    }
    for name in ("n_rows", "n_row_evaluations", "evaluations_per_row"):
        value = getattr(stats, name, None)
        if value is not None:
            row[name] = value
    if "evaluations_per_row" not in row:
        # Every row of a chunk shares its solve.
        row["evaluations_per_row"] = stats.n_evaluations / max(stats.n_chunks, 1)
    if getattr(stats, "n_rows", 0):
        divergences = stats.n_row_divergence_evaluations / stats.n_rows
    else:
        divergences = stats.n_divergence_evaluations / max(stats.n_chunks, 1)
    row["divergence_evaluations_per_row"] = divergences
    return row


def energy_distance(X: np.ndarray, Y: np.ndarray) -> float:
    """The energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic)."""

    def mean_distance(A, B):
        total = 0.0
        for start in range(0, len(A), 500):
            block = A[start : start + 500, None, :] - B[None, :, :]
            total += np.sqrt((block**2).sum(-1)).sum()
        return total / (len(A) * len(B))

    return float(2 * mean_distance(X, Y) - mean_distance(X, X) - mean_distance(Y, Y))


def density(d: int):
    return KNOWN_DENSITIES["two spirals"] if d == 2 else mixture(d, seed=0)


def compare(
    d: int, sizes: tuple, params: dict, old_python: str | None, threads, new=None
):
    n_train, n_test, n_straightforward, _, _ = sizes
    truth = density(d)
    X_train, X_test = truth.sample(n_train, 0), truth.sample(n_test, 1)
    center = X_train.mean(axis=0)
    far = center + FAR_FACTOR * (truth.sample(N_FAR, 2) - center)
    n_pool = min(n_straightforward, n_test)
    typical = np.sort(
        np.random.RandomState(3).choice(n_pool, min(N_TYPICAL, n_pool), replace=False)
    )
    engines = {}

    # (a) this tree's skflow
    est, fit_seconds = timed(
        FlowMatchingDensity(random_state=0, **params, **(new or {})).fit, X_train
    )
    print(
        f"d={d}: skflow {skflow.__version__} fitted in {fit_seconds:.1f} s", flush=True
    )
    est.score_samples(X_test[:50])  # warm-up
    with skflow.solver_stats() as stats:
        scores, seconds, caught = scored(est, X_test)
    row = {"fit_seconds": fit_seconds, "score_seconds": seconds, **stats_row(stats)}
    far_scores, _, far_caught = scored(est, far)
    reference = new_reference(est, X_test[typical])
    reference_far = new_reference(est, far)
    row["error_typical"] = errors(scores[typical], reference)
    row["error_far"] = errors(far_scores, reference_far)
    row["likelihood_error_"] = getattr(est, "likelihood_error_", None)
    # What measuring likelihood_error_ adds to a fit: the same measurement
    # again, on as many test rows as fit takes held-out rows.
    n_measured = rows_to_measure(d)
    z_measured = torch.as_tensor(
        (X_test[:n_measured] - est.mean_) / est.scale_, dtype=torch.float32
    )
    _, measure_seconds = timed(
        likelihood_error,
        est.vector_field_,
        z_measured,
        est.path_.log_base_density,
        est._solver_options(),
    )
    row["error_measurement_seconds"] = measure_seconds
    row["error_measurement_share_of_fit"] = measure_seconds / fit_seconds
    row["warnings"] = sorted(set(caught) | set(far_caught))
    engines[f"skflow {skflow.__version__} (this tree)"] = new = row
    print(
        f"d={d}: skflow {skflow.__version__} scored {n_test:,} rows in "
        f"{seconds:.2f} s, {row['evaluations_per_row']:.0f} evaluations per row; "
        f"error typical {row['error_typical']['mean']:.1e} / "
        f"{row['error_typical']['max']:.1e}, far {row['error_far']['mean']:.1e} / "
        f"{row['error_far']['max']:.1e}",
        flush=True,
    )

    # (b) skflow 0.3.2, in its own environment
    old = None
    if old_python:
        arrays = {
            "X_train": X_train,
            "X_test": X_test,
            "typical": X_test[typical],
            "far": far,
        }
        result, saved = run_old(old_python, "density", arrays, params, threads)
        old = {
            "fit_seconds": result["fit_seconds"],
            "score_seconds": result["score_seconds"],
            "version": result["skflow"],
            "torch": result["torch"],
            "threads": result["threads"],
            "error_typical": errors(
                saved["scores"][typical], saved["reference_typical"]
            ),
            "error_far": errors(saved["far"], saved["reference_far"]),
            "warnings": result["warnings"],
        }
        solver = result["solver_stats"] or {}
        if solver:
            old.update(solver)
            # 0.3.2 solves a chunk's rows together: each pays the chunk's
            # evaluations (chunks of equal size but the last).
            old["evaluations_per_row"] = solver["n_evaluations"] / solver["n_chunks"]
            old["divergence_evaluations_per_row"] = (
                solver["n_divergence_evaluations"] / solver["n_chunks"]
            )
        engines[f"skflow {result['skflow']}"] = old
        print(
            f"d={d}: skflow {result['skflow']} scored {n_test:,} rows in "
            f"{old['score_seconds']:.2f} s",
            flush=True,
        )

    # (c) the straightforward engine on this tree's field
    field, log_base = est.vector_field_, est.path_.log_base_density
    jacobian = np.log(est.scale_).sum()

    def straightforward(X, counter):
        z = torch.as_tensor((X - est.mean_) / est.scale_, dtype=torch.float32)
        tolerance = STRAIGHTFORWARD_TOLERANCE
        values = straightforward_log_density(counter, z, log_base, tolerance, tolerance)
        return values.numpy() - jacobian

    counter = Counter(lambda t, x: field(t, x))
    straightforward(X_test[:50], counter)  # warm-up
    counter.n = 0
    values, seconds = timed(straightforward, X_test[:n_pool], counter)
    engines["straightforward (torchdiffeq, d autograd calls)"] = row = {
        "score_seconds": seconds * n_test / n_pool,
        "timed_rows": n_pool,
        "extrapolated": n_pool < n_test,
        "evaluations_per_row": counter.n,
        "divergence_evaluations_per_row": counter.n,
        "error_typical": errors(values[typical], reference),
    }
    try:
        far_values = straightforward(far, Counter(lambda t, x: field(t, x)))
        row["error_far"] = errors(far_values, reference_far)
    except AssertionError as exc:  # torchdiffeq: "underflow in dt"
        row["error_far"] = None
        row["warnings"] = [f"far rows failed: {exc}"]
    print(f"d={d}: straightforward {seconds:.2f} s for {n_pool:,} rows", flush=True)

    # (e) sampling: the default solver against torchdiffeq's dopri5 at 1e-6,
    # from the same noise
    n_samples = min(N_SAMPLES, n_test)
    sampled, sample_seconds = timed(est.sample, n_samples, 0)
    shared = copy.deepcopy(est).set_params(solver="dopri5")
    shared_sampled, shared_seconds = timed(shared.sample, n_samples, 0)
    gap = np.linalg.norm(sampled - shared_sampled, axis=1) / np.sqrt(d)
    held_out = X_test[-n_samples:]
    sampling = {
        "n_samples": n_samples,
        "seconds": sample_seconds,
        "dopri5_seconds": shared_seconds,
        "rms_gap_mean": float(gap.mean()),
        "rms_gap_max": float(gap.max()),
        "energy_distance": energy_distance(sampled, held_out),
        "dopri5_energy_distance": energy_distance(shared_sampled, held_out),
    }
    print(
        f"d={d}: sampled {n_samples:,} in {sample_seconds:.2f} s "
        f"(dopri5 {shared_seconds:.2f} s); energy distance "
        f"{sampling['energy_distance']:.2e} (dopri5 "
        f"{sampling['dopri5_energy_distance']:.2e})",
        flush=True,
    )

    # (d) exact KDE
    kde, kde_fit = timed(KernelDensity(bandwidth="scott").fit, X_train[:N_KDE_ROWS])
    kde_scores, kde_seconds = timed(kde.score_samples, X_test)
    engines["exact KDE (scott)"] = {
        "fit_seconds": kde_fit,
        "score_seconds": kde_seconds,
        "fit_rows": min(N_KDE_ROWS, n_train),
    }
    print(f"d={d}: KDE scored {n_test:,} rows in {kde_seconds:.2f} s", flush=True)
    return {
        "d": d,
        "data": "two spirals" if d == 2 else f"mixture({d}, seed=0)",
        "n_train": n_train,
        "n_test": n_test,
        "n_typical": len(typical),
        "n_far": N_FAR,
        "engines": engines,
        "speedup_vs_0.3.2": old["score_seconds"] / new["score_seconds"]
        if old
        else None,
        "new_over_kde": new["score_seconds"] / kde_seconds,
        "old_over_kde": old["score_seconds"] / kde_seconds if old else None,
        "mean_kde_log_density": float(np.mean(kde_scores)),
        "sampling": sampling,
    }


def detector_job(sizes: tuple, params: dict, old_python: str | None, threads, new=None):
    *_, n_train, n_test = sizes
    truth = mixture(20, seed=0)
    X_train, X_test = truth.sample(n_train, 0), truth.sample(n_test, 1)
    rows = {}
    est, fit_seconds = timed(
        FlowMatchingOutlierDetector(random_state=0, **params, **(new or {})).fit,
        X_train,
    )
    est.score_samples(X_test[:50])  # warm-up
    with skflow.solver_stats() as stats:
        _, seconds, caught = scored(est, X_test)
    rows[f"skflow {skflow.__version__} (this tree)"] = {
        "fit_seconds": fit_seconds,
        "score_seconds": seconds,
        **stats_row(stats),
        "warnings": caught,
    }
    print(f"detector: skflow scored {n_test:,} rows in {seconds:.1f} s", flush=True)
    if old_python:
        arrays = {"X_train": X_train, "X_test": X_test}
        result, _ = run_old(old_python, "detector", arrays, params, threads)
        rows[f"skflow {result['skflow']}"] = {
            "fit_seconds": result["fit_seconds"],
            "score_seconds": result["score_seconds"],
            **(result["solver_stats"] or {}),
            "warnings": result["warnings"],
        }
        print(
            f"detector: skflow {result['skflow']} scored {n_test:,} rows in "
            f"{result['score_seconds']:.1f} s",
            flush=True,
        )
    kde, kde_fit = timed(KernelDensity(bandwidth="scott").fit, X_train)
    _, kde_seconds = timed(kde.score_samples, X_test)
    rows["exact KDE (scott)"] = {"fit_seconds": kde_fit, "score_seconds": kde_seconds}
    print(f"detector: KDE scored {n_test:,} rows in {kde_seconds:.1f} s", flush=True)
    for row in rows.values():
        row["ratio_to_kde"] = row["score_seconds"] / kde_seconds
    return {"d": 20, "n_train": n_train, "n_test": n_test, "rows": rows}


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _errors(row: dict, part: str) -> str:
    key = f"error_{part}"
    if key not in row:
        return "exact | exact"
    if row[key] is None:
        return "failed | failed"
    error = row[key]
    return f"{error['mean']:.1e} | {error['max']:.1e}"


def markdown(results: dict) -> list[str]:
    lines = [
        "# Fast exact likelihood (issue 18)",
        "",
        environment_line(results),
        "",
        results["old_note"],
        "",
        f"This tree's estimators: `{results['estimator_params']}` beyond "
        "`random_state=0`; 0.3.2 with its defaults.",
        "",
        "Every engine on the same rows and torch threads. Errors (nats) against "
        f"a float64 dopri5 solve at rtol = atol = {REFERENCE_TOLERANCE:g} of the "
        "engine's own model (the straightforward engine runs on this tree's "
        "model): typical = test rows (their values from the timed call), "
        f"far = fresh rows pushed {FAR_FACTOR:g} times as far from the training "
        "mean. Evaluations per row: field evaluations a row's solve cost "
        "(0.3.2 and the straightforward engine: those of the solve its chunk "
        "shares; with the divergence they cost about d + 1 plain ones). "
        "Targets: speed-up vs 0.3.2 >= 5, mean error <= 1e-3, max <= 1e-2.",
    ]
    for entry in results["dims"]:
        lines += [
            "",
            f"## d = {entry['d']} ({entry['data']}; {entry['n_train']:,} training "
            f"rows, {entry['n_test']:,} test rows, errors on {entry['n_typical']} "
            f"typical and {entry['n_far']} far rows)",
            "",
            f"| engine | fit (s) | score {entry['n_test']:,} rows (s) "
            "| evaluations per row (with divergence) "
            "| mean error, typical | max error, typical "
            "| mean error, far | max error, far |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, row in entry["engines"].items():
            label = name
            if row.get("extrapolated"):
                label += f" (timed on {row['timed_rows']:,} rows, extrapolated)"
            if "fit_rows" in row:
                label += f" (fitted on {row['fit_rows']:,} rows)"
            fit = _number(row.get("fit_seconds"), ".1f")
            if name.startswith("straightforward"):
                fit = "(this tree's model)"
            lines.append(
                f"| {label} | {fit} | {row['score_seconds']:.2f} "
                f"| {_number(row.get('evaluations_per_row'), '.0f')} "
                f"({_number(row.get('divergence_evaluations_per_row'), '.0f')}) "
                f"| {_errors(row, 'typical')} | {_errors(row, 'far')} |"
            )
        new = next(iter(entry["engines"].values()))
        if new.get("likelihood_error_"):
            error = new["likelihood_error_"]
            lines += [
                "",
                f"This tree's `likelihood_error_` (measured at fit): mean "
                f"{error['mean']:.1e}, max {error['max']:.1e} on "
                f"{error['n_rows']} rows; measuring it took "
                f"{new['error_measurement_seconds']:.1f} s, "
                f"{100 * new['error_measurement_share_of_fit']:.1f}% of the fit.",
            ]
        for name, row in entry["engines"].items():
            for message in row.get("warnings") or []:
                lines += ["", f"Warning from {name}: {message}"]
    lines += [
        "",
        "## Summary (score seconds)",
        "",
        "| d | speed-up vs 0.3.2 (0.3.2 / this tree; target >= 5) "
        "| this tree / exact KDE | 0.3.2 / exact KDE |",
        "|---|---|---|---|",
    ]
    for entry in results["dims"]:
        lines.append(
            f"| {entry['d']} | {_number(entry['speedup_vs_0.3.2'], '.2f')} "
            f"| {entry['new_over_kde']:.2f} | {_number(entry['old_over_kde'], '.2f')} |"
        )
    lines += [
        "",
        "## Sampling (the default solver against torchdiffeq's dopri5 at 1e-6, "
        "same noise)",
        "",
        "| d | samples | seconds | dopri5 seconds | RMS gap per coordinate, mean "
        "| max | energy distance to test rows | dopri5's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["dims"]:
        sampling = entry["sampling"]
        lines.append(
            f"| {entry['d']} | {sampling['n_samples']:,} | {sampling['seconds']:.2f} "
            f"| {sampling['dopri5_seconds']:.2f} | {sampling['rms_gap_mean']:.1e} "
            f"| {sampling['rms_gap_max']:.1e} | {sampling['energy_distance']:.2e} "
            f"| {sampling['dopri5_energy_distance']:.2e} |"
        )
    detector = results.get("detector")
    if detector:
        lines += [
            "",
            f"## Detector: score {detector['n_test']:,} rows of 20-D data "
            f"(fitted on {detector['n_train']:,} rows)",
            "",
            "| engine | fit (s) | score (s) | ratio to exact KDE |",
            "|---|---|---|---|",
        ]
        for name, row in detector["rows"].items():
            lines.append(
                f"| {name} | {row['fit_seconds']:.1f} | {row['score_seconds']:.2f} "
                f"| {row['ratio_to_kde']:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument(
        "--old-python",
        default=os.environ.get("SKFLOW_OLD_PYTHON"),
        help="python of an environment with skflow 0.3.2 (default: $SKFLOW_OLD_PYTHON)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: cores)"
    )
    parser.add_argument("--skip-detector", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny smoke test")
    parser.add_argument(
        "--architecture",
        choices=["mlp", "hollow"],
        default="mlp",
        help="this tree's field (hollow: results/fast_likelihood_hollow.*)",
    )
    args = parser.parse_args()

    threads = args.threads or (1 if args.quick else os.cpu_count())
    torch.set_num_threads(threads)
    sizes = SIZES["quick" if args.quick else "full"]
    params = QUICK_PARAMS if args.quick else {}
    results = environment(__spec__.name)
    if len(sys.argv) > 1:
        results["command"] += " " + " ".join(sys.argv[1:])
    results["quick"] = args.quick
    new = {"architecture": args.architecture}
    results["estimator_params"] = {**params, **new}
    if args.old_python:
        results["old_python"] = args.old_python
        results["old_note"] = (
            f"skflow 0.3.2 ran in its own environment (`{args.old_python}`, "
            "versions in its rows of the JSON)."
        )
    else:
        results["old_python"] = None
        results["old_note"] = (
            "skflow 0.3.2 was not run: no --old-python and no SKFLOW_OLD_PYTHON "
            "(see the docstring of benchmarks/fast_likelihood.py to create its "
            "environment)."
        )
        print(results["old_note"], flush=True)
    print(f"torch threads: {threads}", flush=True)
    results["dims"] = [
        compare(d, sizes, params, args.old_python, threads, new) for d in args.dims
    ]
    if not args.skip_detector:
        results["detector"] = detector_job(sizes, params, args.old_python, threads, new)
    name = "fast_likelihood" + ("_hollow" if args.architecture == "hollow" else "")
    name += "_quick" if args.quick else ""
    write_results(name, results, markdown(results))


if __name__ == "__main__":
    main()
