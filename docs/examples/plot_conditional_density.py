"""
Conditional density: probabilistic regression
=============================================

:class:`skflow.ConditionalFlowMatchingDensity` models the whole density
p(y | x), not only a point prediction. Here y has one branch for x < 0 and
two for x > 0, and its noise grows with abs(x): a mean and a variance cannot
describe it. The example draws conditional quantile bands from
:meth:`~skflow.ConditionalFlowMatchingDensity.sample`, the conditional mean
from :meth:`~skflow.ConditionalFlowMatchingDensity.predict`, the density
itself from :meth:`~skflow.ConditionalFlowMatchingDensity.score_samples`,
and scores a point whose y is typical overall but unlikely given its x.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from skflow import ConditionalFlowMatchingDensity, FlowMatchingDensity


def branches(n, seed):
    """x uniform on [-3, 3]; y = 0.5 x for x < 0, +-1.5 x for x > 0."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(-3, 3, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    centre = np.where(x < 0, 0.5 * x, 1.5 * sign * x)
    y = centre + (0.1 + 0.15 * np.abs(x)) * rng.normal(size=n)
    return x.reshape(-1, 1), y


X, y = branches(2000, seed=0)

# Small models, to run in well under a minute on 2 CPU cores: the defaults
# (4 x 256 network, max_iter="auto") fit better but take longer.
small = {"hidden_layer_sizes": (64, 64), "max_iter": 1500, "random_state": 0}
est = ConditionalFlowMatchingDensity(**small).fit(X, y)
print(f"mean conditional log-likelihood (training rows): {est.score(X, y):.3f}")

# %%
# Conditional quantiles and mean
# ------------------------------
# 200 draws of y given each x of a grid give the quantile bands;
# ``predict`` is the mean of 100 antithetic draws per x. Where y has two
# branches, the 25-75% band covers the empty gap between them, and the mean
# lies in that gap.
x_grid = np.linspace(-3, 3, 41).reshape(-1, 1)
draws = est.sample(x_grid, n_samples=200, random_state=0)  # (41, 200)
q05, q25, q75, q95 = np.quantile(draws, [0.05, 0.25, 0.75, 0.95], axis=1)
mean = est.predict(x_grid)  # (41,)

fig, ax = plt.subplots(figsize=(6, 4.5))
ax.scatter(X[:, 0], y, s=2, color="grey", alpha=0.5, label="training data")
ax.fill_between(x_grid[:, 0], q05, q95, alpha=0.25, label="5-95%")
ax.fill_between(x_grid[:, 0], q25, q75, alpha=0.45, label="25-75%")
ax.plot(x_grid[:, 0], mean, color="black", label="predict (mean)")
ax.set(xlabel="x", ylabel="y")
ax.legend(loc="upper left")
fig.tight_layout()

# %%
# The conditional density
# -----------------------
# ``score_samples(X, y)`` is log p(y | x) in y's units: each column of the
# image is a density of y that integrates to 1. It shows the two branches
# that the bands blur.
xx, yy = np.meshgrid(np.linspace(-3, 3, 60), np.linspace(-5.5, 5.5, 60))
log_density = est.score_samples(xx.reshape(-1, 1), yy.ravel()).reshape(xx.shape)

fig, ax = plt.subplots(figsize=(6, 4.5))
image = ax.pcolormesh(
    xx, yy, np.exp(log_density), shading="auto", cmap="magma", norm=PowerNorm(0.5)
)
fig.colorbar(image, label="p(y | x)")
ax.set(xlabel="x", ylabel="y", title="score_samples on a grid")
fig.tight_layout()

# %%
# Conditional anomaly scores
# --------------------------
# At x = 2.5, a y equal to the overall mean of y is common among all the
# targets but falls between the two branches. A density of y alone
# (:class:`skflow.FlowMatchingDensity` fitted on y) finds it typical; the
# conditional density finds it unlikely given its x. A point on a branch
# is shown for comparison.
flow_y = FlowMatchingDensity(**small).fit(y.reshape(-1, 1))
x_point = 2.5
points = {"y = mean of y": y.mean(), "y on a branch": 1.5 * x_point}
print(f"mean of y: {y.mean():.3f}")
for name, y_point in points.items():
    conditional = est.score_samples([[x_point]], [y_point])[0]
    marginal = flow_y.score_samples([[y_point]])[0]
    print(
        f"x = {x_point}, {name} ({y_point:.2f}): log p(y | x) = {conditional:.2f}, "
        f"log p(y) = {marginal:.2f}"
    )

y_line = np.linspace(-5.5, 5.5, 200)
fig, (ax_data, ax_density) = plt.subplots(1, 2, figsize=(10, 4))
ax_data.scatter(X[:, 0], y, s=2, color="grey", alpha=0.5)
ax_data.scatter(x_point, y.mean(), s=150, marker="*", color="tab:red")
ax_data.axvline(x_point, color="tab:red", linestyle=":")
ax_data.set(xlabel="x", ylabel="y", title="the point (red star)")
ax_density.plot(
    y_line,
    np.exp(est.score_samples(np.full((len(y_line), 1), x_point), y_line)),
    label=f"p(y | x = {x_point})",
)
ax_density.plot(
    y_line, np.exp(flow_y.score_samples(y_line.reshape(-1, 1))), label="p(y)"
)
ax_density.axvline(y.mean(), color="tab:red", linestyle=":", label="the point's y")
ax_density.set(xlabel="y", ylabel="density")
ax_density.legend()
fig.tight_layout()
