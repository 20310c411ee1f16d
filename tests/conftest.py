"""Shared fixtures. ``pytest --device cuda`` runs the device-aware tests there."""

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the estimator tests (default: cpu)",
    )


@pytest.fixture
def device(request):
    return request.config.getoption("--device")


@pytest.fixture
def gaussian_mixture_2d():
    """A 2-D mixture of three well separated Gaussians, with its log density."""
    means = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    covariances = np.array(
        [
            [[0.3, 0.1], [0.1, 0.2]],
            [[0.2, -0.05], [-0.05, 0.3]],
            [[0.25, 0.0], [0.0, 0.15]],
        ]
    )
    weights = np.array([0.4, 0.35, 0.25])

    def sample(n, seed):
        rng = np.random.RandomState(seed)
        component = rng.choice(len(weights), size=n, p=weights)
        noise = rng.standard_normal((n, 2))
        chol = np.linalg.cholesky(covariances)
        return means[component] + np.einsum("nij,nj->ni", chol[component], noise)

    def log_density(X):
        from scipy.stats import multivariate_normal

        per_component = np.stack(
            [
                np.log(w) + multivariate_normal(m, c).logpdf(X)
                for w, m, c in zip(weights, means, covariances, strict=True)
            ]
        )
        return np.logaddexp.reduce(per_component, axis=0)

    return sample, log_density
