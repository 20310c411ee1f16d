"""Scale-out: parallel grid search, a dask cluster, 10^6-row fits, dask scoring.

Measured in one run, on this machine:

1. GridSearchCV over path x sigma (4 candidates x 3 folds = 12 fits of a
   2x64 network, 400 steps, on 2,000 rows of two moons) with n_jobs=1 and
   n_jobs=2 (joblib's default loky backend): wall times, their ratio, and
   whether the cross-validated scores are identical.
2. The same grid on a dask.distributed LocalCluster (2 worker processes, one
   thread each, loopback), through joblib.parallel_backend("dask").
3. A default fit (max_iter="auto") on 10^6 x 10 rows and on 10^4 x 10 rows,
   each in a fresh process: wall time, training throughput (minibatch rows
   per second) and the process's peak resident memory, against the bound
   2 x (size of X) + 1 GiB.
4. Scoring 20,000 x 10 rows held as a dask array (blocks of 2,500 rows,
   scored one at a time) with skflow.dask_score_samples against
   score_samples on the numpy array: time and largest difference.

loky's workers are started once before the timed n_jobs=2 search (they stay
alive between calls, so only a session's first parallel call pays for
importing torch in them); the dask cluster's start-up is reported apart.

Run from the repository root on an idle machine (needs the ``dask`` extra):
``python -m benchmarks.scaling``. Writes ``results/scaling.{json,md}``.
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from sklearn.datasets import make_moons
from sklearn.model_selection import GridSearchCV

from benchmarks._common import environment, environment_line, timed, write_results
from skflow import FlowMatchingDensity

GRID = {"path": ["fm", "icfm"], "sigma": [0.01, 0.1]}
SMALL = {"hidden_layer_sizes": (64, 64), "max_iter": 400, "batch_size": 256}


def _grid_search(X, n_jobs=None):
    search = GridSearchCV(
        FlowMatchingDensity(**SMALL, random_state=0), GRID, cv=3, n_jobs=n_jobs
    )
    _, seconds = timed(search.fit, X)
    return seconds, search.cv_results_["mean_test_score"]


def grid_searches():
    import joblib
    import torch
    from distributed import Client, LocalCluster
    from threadpoolctl import threadpool_limits

    X, _ = make_moons(n_samples=2000, noise=0.05, random_state=0)
    _grid_search(X[:200], n_jobs=2)  # start loky's workers once, untimed
    serial_time, serial_scores = _grid_search(X, n_jobs=1)
    loky_time, loky_scores = _grid_search(X, n_jobs=2)
    # The workers run torch and BLAS on one thread each; so does this
    # reference, whose scores they should then match bit for bit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        one_thread_time, one_thread_scores = _grid_search(X, n_jobs=1)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
    ):
        startup = time.perf_counter() - start
        with joblib.parallel_backend("dask"):
            _grid_search(X[:200])  # import torch in the workers, untimed
            dask_time, dask_scores = _grid_search(X)

    def largest_difference(scores, reference):
        return float(np.abs(scores - reference).max())

    return {
        "n_jobs_1_seconds": serial_time,
        "n_jobs_1_one_thread_seconds": one_thread_time,
        "n_jobs_2_seconds": loky_time,
        "speedup_n_jobs_2": serial_time / loky_time,
        "dask_cluster_startup_seconds": startup,
        "dask_seconds": dask_time,
        "speedup_dask_2_workers": serial_time / dask_time,
        "n_jobs_2_vs_one_thread": largest_difference(loky_scores, one_thread_scores),
        "dask_vs_one_thread": largest_difference(dask_scores, one_thread_scores),
        "n_jobs_2_vs_n_jobs_1": largest_difference(loky_scores, serial_scores),
    }


def _fit_in_fresh_process(n_rows):
    """Fit the default estimator on n_rows x 10 in a child process."""
    code = f"""
import json, resource, time
import numpy as np
from skflow import FlowMatchingDensity
X = np.random.RandomState(0).normal(size=({n_rows}, 10))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
est = FlowMatchingDensity(random_state=0).fit(X)
seconds = time.perf_counter() - start
print(json.dumps({{
    "rows": {n_rows},
    "data_mib": X.nbytes / 2**20,
    "fit_seconds": seconds,
    "rows_per_second": est.n_iter_ * est.batch_size / seconds,
    "peak_rss_before_fit_mib": before / 1024,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["bound_mib"] = 2 * row["data_mib"] + 1024
    return row


def dask_scoring():
    import dask
    import dask.array as da

    from skflow import dask_score_samples

    rng = np.random.RandomState(0)
    train = rng.normal(size=(5000, 10))
    est = FlowMatchingDensity(random_state=0).fit(train)
    X = rng.normal(size=(20000, 10))
    in_memory, memory_time = timed(est.score_samples, X)
    with dask.config.set(scheduler="synchronous"):  # one block at a time
        blockwise, dask_time = timed(
            dask_score_samples(est, da.from_array(X, chunks=(2500, 10))).compute
        )
    return {
        "rows": len(X),
        "in_memory_seconds": memory_time,
        "dask_seconds": dask_time,
        "in_memory_over_dask": memory_time / dask_time,
        "max_abs_difference": float(np.abs(blockwise - in_memory).max()),
    }


def markdown(results):
    grid, fits, scoring = (
        results["grid_search"],
        results["large_fit"],
        results["dask_scoring"],
    )
    lines = [
        "# Scale-out",
        "",
        f"{environment_line(results)} See the script's docstring for the setup.",
        "",
        "## Grid search: 4 candidates x 3 folds",
        "",
        "| backend | time | speed-up over n_jobs=1 |",
        "|---|---|---|",
        f"| n_jobs=1 (torch on {results['threads']} threads) "
        f"| {grid['n_jobs_1_seconds']:.1f} s | 1.00x |",
        f"| n_jobs=1, torch and BLAS on 1 thread | "
        f"{grid['n_jobs_1_one_thread_seconds']:.1f} s | "
        f"{grid['n_jobs_1_seconds'] / grid['n_jobs_1_one_thread_seconds']:.2f}x |",
        f"| n_jobs=2 (loky, 1 thread per worker) | {grid['n_jobs_2_seconds']:.1f} s "
        f"| {grid['speedup_n_jobs_2']:.2f}x |",
        f"| dask LocalCluster, 2 workers x 1 thread | {grid['dask_seconds']:.1f} s "
        f"(+{grid['dask_cluster_startup_seconds']:.1f} s start-up) | "
        f"{grid['speedup_dask_2_workers']:.2f}x |",
        "",
        "Largest difference of a mean test score (nats): n_jobs=2 and dask "
        "against the one-thread serial search "
        f"{grid['n_jobs_2_vs_one_thread']:.1e} and "
        f"{grid['dask_vs_one_thread']:.1e}; n_jobs=2 against the default "
        f"serial search {grid['n_jobs_2_vs_n_jobs_1']:.1e}"
        + (
            " (float32 matrix products round differently on 1 and "
            f"{results['threads']} threads)."
            if grid["n_jobs_2_vs_n_jobs_1"] > 0
            else "."
        ),
        "",
        "## Default fit (max_iter='auto', early stopping) on n x 10 rows",
        "",
        "| rows | size of X | fit time | rows/s | peak memory of the process "
        "(before fit) | bound 2 x X + 1 GiB |",
        "|---|---|---|---|---|---|",
    ]
    for fit in fits:
        lines.append(
            f"| {fit['rows']:,} | {fit['data_mib']:.0f} MiB "
            f"| {fit['fit_seconds']:.1f} s | {fit['rows_per_second']:,.0f} "
            f"| {fit['peak_rss_mib']:.0f} MiB "
            f"({fit['peak_rss_before_fit_mib']:.0f} MiB) "
            f"| {fit['bound_mib']:.0f} MiB |"
        )
    lines += [
        "",
        "## Scoring a dask array (20,000 x 10, blocks of 2,500 rows, one at a time)",
        "",
        "| in memory | dask_score_samples | ratio | largest difference (nats) |",
        "|---|---|---|---|",
        f"| {scoring['in_memory_seconds']:.1f} s | {scoring['dask_seconds']:.1f} s "
        f"| {scoring['in_memory_over_dask']:.2f}x "
        f"| {scoring['max_abs_difference']:.1e} |",
    ]
    return lines


def main():
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    results = {**environment(__spec__.name), "grid_search": grid_searches()}
    print(results, flush=True)
    results["large_fit"] = [_fit_in_fresh_process(n) for n in (10**4, 10**6)]
    print(results["large_fit"], flush=True)
    results["dask_scoring"] = dask_scoring()
    print(results["dask_scoring"], flush=True)
    results["this_process_peak_rss_mib"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    write_results("scaling", results, markdown(results))


if __name__ == "__main__":
    main()
