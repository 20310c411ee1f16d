"""Quick start: fit FlowMatchingDensity on two moons and compare held-out
log-likelihoods with KernelDensity and GaussianMixture.

Run with ``python docs/examples/quickstart.py`` (about half a minute on a
laptop CPU). The data are generated, nothing is downloaded.
"""

import time

import numpy as np
from sklearn.datasets import make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from skflow import FlowMatchingDensity

X, _ = make_moons(n_samples=4000, noise=0.05, random_state=0)
X_train, X_test = X[:3000], X[3000:]


def report(name, estimator):
    start = time.perf_counter()
    estimator.fit(X_train)
    fit_time = time.perf_counter() - start
    score = np.mean(estimator.score_samples(X_test))
    print(f"{name:<38} {score:8.3f}   {fit_time:6.1f} s")
    return estimator


print(f"{'model':<38} {'test log-likelihood':>8}   fit time")
flow = report("FlowMatchingDensity (defaults)", FlowMatchingDensity(random_state=0))
report(
    "KernelDensity (bandwidth by 5-fold CV)",
    GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-2.5, 0, 20)}),
)
bic = [
    GaussianMixture(k, random_state=0).fit(X_train).bic(X_train) for k in range(1, 31)
]
report(
    f"GaussianMixture ({np.argmin(bic) + 1} components by BIC)",
    GaussianMixture(int(np.argmin(bic)) + 1, random_state=0),
)

samples = flow.sample(5, random_state=0)
print("\nFive samples from the flow:\n", np.round(samples, 3))
