"""Known densities to test against: sample and exact log density."""

import numpy as np
from scipy.stats import multivariate_normal


class GaussianMixture2D:
    """A 2-D mixture of three well separated Gaussians."""

    means = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    covariances = np.array(
        [
            [[0.3, 0.1], [0.1, 0.2]],
            [[0.2, -0.05], [-0.05, 0.3]],
            [[0.25, 0.0], [0.0, 0.15]],
        ]
    )
    weights = np.array([0.4, 0.35, 0.25])

    def sample(self, n_samples, seed):
        rng = np.random.RandomState(seed)
        component = rng.choice(len(self.weights), size=n_samples, p=self.weights)
        noise = rng.standard_normal((n_samples, 2))
        chol = np.linalg.cholesky(self.covariances)
        return self.means[component] + np.einsum("nij,nj->ni", chol[component], noise)

    def log_density(self, X):
        per_component = [
            np.log(w) + multivariate_normal(m, c).logpdf(X)
            for w, m, c in zip(self.weights, self.means, self.covariances, strict=True)
        ]
        return np.logaddexp.reduce(per_component, axis=0)
