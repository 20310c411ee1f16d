"""``skflow demo``: two moons, three density estimators, one figure."""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from .density import FlowMatchingDensity

__all__ = ["run_demo"]


def _gmm_by_bic(X: np.ndarray, max_components: int = 30) -> GaussianMixture:
    """The GaussianMixture with the lowest BIC on X, fitted."""
    fits = [
        GaussianMixture(k, random_state=0).fit(X) for k in range(1, max_components + 1)
    ]
    return min(fits, key=lambda gmm: gmm.bic(X))


def run_demo(output: str, *, max_iter: int | None = None) -> None:
    """Fit on two moons, print held-out log-likelihoods, draw ``output``.

    Parameters
    ----------
    output : str
        Path of the PNG to write (skipped, with a message, when matplotlib
        is missing).
    max_iter : int, default=None
        Training steps of the flow; None keeps the estimator's default.
    """
    X, _ = make_moons(n_samples=4000, noise=0.05, random_state=0)
    X_train, X_test = X[:3000], X[3000:]
    flow_params = {"random_state": 0, "verbose": 1}  # a progress bar
    if max_iter is not None:
        flow_params["max_iter"] = max_iter
    fits = {
        "FlowMatchingDensity (defaults)": lambda: FlowMatchingDensity(
            **flow_params
        ).fit(X_train),
        "KernelDensity (bandwidth by 5-fold CV)": lambda: GridSearchCV(
            KernelDensity(), {"bandwidth": np.logspace(-2.5, 0, 20)}
        ).fit(X_train),
        "GaussianMixture (components by BIC)": lambda: _gmm_by_bic(X_train),
    }
    print("Two moons: 3000 training rows, 1000 held out (noise 0.05).")
    print(f"{'model':<40} {'test log-likelihood':>19} {'fit time':>9}")
    fitted = {}
    for name, fit in fits.items():
        start = time.perf_counter()
        fitted[name] = model = fit()
        elapsed = time.perf_counter() - start
        if isinstance(model, GaussianMixture):  # the name states its choice
            name = f"GaussianMixture ({model.n_components} components by BIC)"
        score = np.mean(model.score_samples(X_test))
        print(f"{name:<40} {score:19.3f} {elapsed:8.1f}s", flush=True)
    flow = fitted["FlowMatchingDensity (defaults)"]

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("No figure: matplotlib is missing (pip install 'skflow[plot]').")
        return
    grid = np.linspace(-1.5, 2.5, 120), np.linspace(-1.0, 1.5, 80)
    xx, yy = np.meshgrid(*grid)
    density = np.exp(flow.score_samples(np.column_stack([xx.ravel(), yy.ravel()])))
    samples = flow.sample(1000, random_state=0)
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharex=True, sharey=True)
    axes[0].scatter(*X_test.T, s=2, color="black")
    axes[0].set_title("held-out data")
    axes[1].pcolormesh(xx, yy, density.reshape(xx.shape), shading="auto", cmap="magma")
    axes[1].set_title("learned density")
    axes[2].scatter(*samples.T, s=2, color="tab:blue")
    axes[2].set_title("samples from the flow")
    for axis in axes:
        axis.set_aspect("equal")
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    print(f"Figure written to {output}")
