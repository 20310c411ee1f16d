"""Scale-out: process workers and a dask.distributed cluster give the
serial results (dask arrays: test_blockwise.py)."""

from contextlib import contextmanager

import joblib
import pytest
import torch
from _data import SMALL, blobs
from joblib import Parallel, delayed
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_info, threadpool_limits

from skflow import FlowMatchingDensity

MODEL = {**SMALL, "max_iter": 60}
GRID = {"path": ["fm", "icfm"], "sigma": [0.01, 0.1]}


@contextmanager
def _one_thread():
    """Run torch and BLAS on one thread, as a worker on 2 cores with n_jobs=2 does.

    Matrix products round differently on 1 and 2 threads (float32), so
    results of workers are compared with a reference computed like this.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def _fit_and_report_threads(X):
    est = FlowMatchingDensity(**MODEL, random_state=0).fit(X)
    blas = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    return torch.get_num_threads(), blas, est.score_samples(X)


def test_process_workers_fit_on_their_share_of_the_cores():
    # joblib's loky workers get cpu_count // n_jobs threads for OpenMP and
    # BLAS, and torch follows that limit: n_jobs fits do not oversubscribe.
    n_jobs = 2
    share = max(1, joblib.cpu_count() // n_jobs)
    X = blobs(150)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_report_threads)(X) for _ in range(n_jobs)
    )
    with _one_thread():
        expected = FlowMatchingDensity(**MODEL, random_state=0).fit(X).score_samples(X)
    for torch_threads, blas_threads, scores in results:
        assert torch_threads == share
        assert blas_threads <= share
        if share == 1:
            assert_array_equal(scores, expected)


def test_parallel_grid_search_equals_the_serial_one():
    X = blobs(150)
    search = GridSearchCV(FlowMatchingDensity(**MODEL, random_state=0), GRID, cv=2)
    with _one_thread():
        serial = search.fit(X).cv_results_["mean_test_score"]
    parallel = search.set_params(n_jobs=2).fit(X).cv_results_["mean_test_score"]
    if joblib.cpu_count() // 2 == 1:
        assert_array_equal(parallel, serial)
    else:  # workers on several threads round differently from the reference
        assert_allclose(parallel, serial, atol=1e-2)


def test_grid_search_on_a_dask_cluster_equals_the_serial_one():
    distributed = pytest.importorskip("distributed")
    X = blobs(150)
    search = GridSearchCV(FlowMatchingDensity(**MODEL, random_state=0), GRID, cv=2)
    with _one_thread():
        serial = search.fit(X)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_backend("dask"),
    ):
        on_cluster = GridSearchCV(
            FlowMatchingDensity(**MODEL, random_state=0), GRID, cv=2
        ).fit(X)
        worker_threads = client.run(torch.get_num_threads)
    assert set(worker_threads.values()) == {1}  # dask's workers limit threads too
    assert_array_equal(
        on_cluster.cv_results_["mean_test_score"],
        serial.cv_results_["mean_test_score"],
    )
    assert on_cluster.best_params_ == serial.best_params_
