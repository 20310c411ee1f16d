"""
Two-dimensional densities against KDE and a Gaussian mixture
============================================================

Fit :class:`skflow.FlowMatchingDensity`, ``KernelDensity`` (bandwidth by
cross-validation) and ``GaussianMixture`` (components by BIC) on three toy
data sets, and draw each learned density beside the data, with the mean
log-likelihood of held-out points in each title (higher is better). The
flow uses its defaults (``max_iter="auto"``: about 3,100 steps for 2,000
rows, with early stopping on 10% of them). Rings are the hardest case for
a flow, which must tear one Gaussian blob into two nested loops.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_circles, make_moons
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from skflow import FlowMatchingDensity


def eight_gaussians(n, seed):
    rng = np.random.RandomState(seed)
    angles = 2 * np.pi * rng.randint(8, size=n) / 8
    centres = 2 * np.column_stack([np.cos(angles), np.sin(angles)])
    return centres + 0.15 * rng.normal(size=(n, 2))


datasets = {
    "moons": make_moons(3000, noise=0.05, random_state=0)[0],
    "circles": make_circles(3000, noise=0.04, factor=0.5, random_state=0)[0],
    "8 Gaussians": eight_gaussians(3000, seed=0),
}


def gmm_by_bic(X):
    fits = [GaussianMixture(k, random_state=0).fit(X) for k in range(1, 16)]
    return min(fits, key=lambda gmm: gmm.bic(X))


fig, axes = plt.subplots(3, 4, figsize=(12, 9))
for row, (name, X) in zip(axes, datasets.items(), strict=True):
    train, test = X[:2000], X[2000:]
    models = {
        "flow matching": FlowMatchingDensity(random_state=0).fit(train),
        "KDE (CV)": GridSearchCV(
            KernelDensity(), {"bandwidth": np.logspace(-2, 0, 12)}
        ).fit(train),
        "GMM (BIC)": gmm_by_bic(train),
    }
    low, high = X.min(0) - 0.5, X.max(0) + 0.5
    xx, yy = np.meshgrid(
        np.linspace(low[0], high[0], 70), np.linspace(low[1], high[1], 70)
    )
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    row[0].scatter(*test.T, s=1, color="black")
    row[0].set_title(f"{name}: held-out data")
    for ax, (model_name, model) in zip(row[1:], models.items(), strict=True):
        density = np.exp(model.score_samples(grid)).reshape(xx.shape)
        ax.pcolormesh(xx, yy, density, shading="auto", cmap="magma")
        ax.set_title(f"{model_name}: {np.mean(model.score_samples(test)):.3f}")
    for ax in row:
        ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
fig.tight_layout()
