"""Scale-out: process workers, a dask.distributed cluster, dask arrays."""

from contextlib import contextmanager

import dask.array as da
import joblib
import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster
from joblib import Parallel, delayed
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_info, threadpool_limits

from skflow import FlowMatchingDensity, dask_score_samples

SMALL = {"hidden_layer_sizes": (32, 32), "max_iter": 60, "batch_size": 64}
GRID = {"path": ["fm", "icfm"], "sigma": [0.01, 0.1]}


def _blobs(n=150, d=2, seed=0):
    return np.random.RandomState(seed).normal(size=(n, d))


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
    est = FlowMatchingDensity(**SMALL, random_state=0).fit(X)
    blas = max((pool["num_threads"] for pool in threadpool_info()), default=1)
    return torch.get_num_threads(), blas, est.score_samples(X)


def test_process_workers_fit_on_their_share_of_the_cores():
    # joblib's loky workers get cpu_count // n_jobs threads for OpenMP and
    # BLAS, and torch follows that limit: n_jobs fits do not oversubscribe.
    n_jobs = 2
    share = max(1, joblib.cpu_count() // n_jobs)
    X = _blobs()
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_report_threads)(X) for _ in range(n_jobs)
    )
    with _one_thread():
        expected = FlowMatchingDensity(**SMALL, random_state=0).fit(X).score_samples(X)
    for torch_threads, blas_threads, scores in results:
        assert torch_threads == share
        assert blas_threads <= share
        if share == 1:
            assert_array_equal(scores, expected)


def test_parallel_grid_search_equals_the_serial_one():
    X = _blobs()
    search = GridSearchCV(FlowMatchingDensity(**SMALL, random_state=0), GRID, cv=2)
    with _one_thread():
        serial = search.fit(X).cv_results_["mean_test_score"]
    parallel = search.set_params(n_jobs=2).fit(X).cv_results_["mean_test_score"]
    if joblib.cpu_count() // 2 == 1:
        assert_array_equal(parallel, serial)
    else:  # workers on several threads round differently from the reference
        assert_allclose(parallel, serial, atol=1e-2)


def test_grid_search_on_a_dask_cluster_equals_the_serial_one():
    X = _blobs()
    search = GridSearchCV(FlowMatchingDensity(**SMALL, random_state=0), GRID, cv=2)
    with _one_thread():
        serial = search.fit(X)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
        joblib.parallel_backend("dask"),
    ):
        distributed = GridSearchCV(
            FlowMatchingDensity(**SMALL, random_state=0), GRID, cv=2
        ).fit(X)
        worker_threads = client.run(torch.get_num_threads)
    assert set(worker_threads.values()) == {1}  # dask's workers limit threads too
    assert_array_equal(
        distributed.cv_results_["mean_test_score"],
        serial.cv_results_["mean_test_score"],
    )
    assert distributed.best_params_ == serial.best_params_


@pytest.fixture(scope="module")
def exact():
    """rk4 in float64: each row is integrated on its own."""
    X = _blobs(d=3)
    params = {**SMALL, "solver": "rk4", "n_steps": 4, "dtype": "float64"}
    return X, FlowMatchingDensity(**params, random_state=0).fit(X)


def test_dask_scores_equal_in_memory_scores(exact):
    X, est = exact
    # Rows in blocks of 7 and columns split too: they are joined first.
    blocks = da.from_array(X, chunks=(7, 2))
    lazy = dask_score_samples(est, blocks)
    assert lazy.shape == (len(X),) and lazy.dtype == np.float64
    assert_allclose(lazy.compute(), est.score_samples(X), rtol=1e-12)


def test_dask_scores_with_an_adaptive_solver_agree_to_its_tolerance():
    X = _blobs(n=300)
    est = FlowMatchingDensity(**SMALL, random_state=0).fit(X)
    scores = dask_score_samples(est, da.from_array(X, chunks=50)).compute()
    # Steps are shared within a block, not across the whole array: the
    # engine's accuracy target is 1e-3 nats.
    assert_allclose(scores, est.score_samples(X), atol=1e-3, rtol=0)


def test_dask_scoring_checks_its_input(exact):
    X, est = exact
    with pytest.raises(ValueError, match="expecting 2-D data with 3 features"):
        dask_score_samples(est, da.from_array(X[:, :2]))
    with pytest.raises(NotFittedError):
        dask_score_samples(FlowMatchingDensity(), da.from_array(X))
