"""Scoring dask arrays block by block, for data larger than memory.

Needs the ``dask`` extra (``pip install "skflow[dask]"``); dask is imported
only when :func:`dask_score_samples` is called.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["dask_score_samples"]


def _score_block(block: np.ndarray, estimator) -> np.ndarray:
    return estimator.score_samples(block)


def dask_score_samples(estimator, X):
    """Log density of each row of a dask array, computed block by block.

    Each block of rows is scored by ``estimator.score_samples`` where dask
    runs it (threads, processes or a ``dask.distributed`` cluster); only one
    block per worker is in memory at a time. The fitted estimator enters the
    graph once, as a ``dask.delayed`` object, not once per block.

    Parameters
    ----------
    estimator : FlowMatchingDensity
        A fitted estimator (or FlowMatchingOutlierDetector).
    X : dask.array.Array of shape (n_samples, n_features)
        Points to score. Blocks may split the rows anyhow; the columns are
        joined into one block first.

    Returns
    -------
    log_density : dask.array.Array of shape (n_samples,)
        Lazy float64 log densities; call ``.compute()`` for a numpy array.
        With a fixed-step solver they equal ``estimator.score_samples`` on
        the whole array up to round-off; adaptive solvers share their steps
        within a block, so they agree to the solver's tolerance.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from skflow import FlowMatchingDensity, dask_score_samples
    >>> X = np.random.RandomState(0).normal(size=(100, 2))
    >>> est = FlowMatchingDensity(hidden_layer_sizes=(16,), max_iter=20,
    ...                           random_state=0).fit(X)
    >>> dask_score_samples(est, da.from_array(X, chunks=25)).compute().shape
    (100,)
    """
    try:
        import dask
        import dask.array as da
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            'dask_score_samples needs dask: pip install "skflow[dask]"'
        ) from error
    check_is_fitted(estimator)
    X = da.asarray(X)
    if X.ndim != 2 or X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has shape {X.shape}, but {type(estimator).__name__} is "
            f"expecting 2-D data with {estimator.n_features_in_} features."
        )
    shipped = dask.delayed(estimator, traverse=False)
    return X.rechunk({1: -1}).map_blocks(
        _score_block, shipped, drop_axis=1, dtype=np.float64, meta=np.empty(0)
    )
