"""
Choosing the path and sigma by grid search
==========================================

``score`` is the mean log-likelihood, so ``GridSearchCV`` selects
:class:`skflow.FlowMatchingDensity`'s parameters by held-out likelihood with
no ``scoring=``. ``sigma`` smooths the learned density like a bandwidth.
``n_jobs=2`` runs two fits at a time, each in its own process.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_moons
from sklearn.model_selection import GridSearchCV

from skflow import FlowMatchingDensity

X, _ = make_moons(1500, noise=0.05, random_state=0)
grid = {"path": ["fm", "vp"], "sigma": [0.01, 0.1]}
search = GridSearchCV(FlowMatchingDensity(random_state=0), grid, cv=2, n_jobs=2).fit(X)
print("best:", search.best_params_, f"score {search.best_score_:.3f}")

# %%
# Mean held-out log-likelihood of each candidate.
scores = search.cv_results_["mean_test_score"].reshape(
    len(grid["path"]), len(grid["sigma"])
)
fig, ax = plt.subplots(figsize=(5, 4))
image = ax.imshow(scores, cmap="viridis")
ax.set(
    xticks=range(len(grid["sigma"])),
    xticklabels=grid["sigma"],
    yticks=range(len(grid["path"])),
    yticklabels=grid["path"],
    xlabel="sigma",
    ylabel="path",
)
for (i, j), value in np.ndenumerate(scores):
    ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white")
fig.colorbar(image, label="mean test log-likelihood")
fig.tight_layout()
