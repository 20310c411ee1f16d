"""
Sampling: from noise to data
============================

:meth:`skflow.FlowMatchingDensity.sample` draws Gaussian noise and
integrates the learned vector field from t = 0 (noise) to t = 1 (data).
The trained field is exposed as ``vector_field_(t, z)`` on standardized
inputs, so the same integration can be followed step by step with
torchdiffeq.
"""

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import make_moons
from torchdiffeq import odeint

from skflow import FlowMatchingDensity

X, _ = make_moons(2000, noise=0.05, random_state=0)
est = FlowMatchingDensity(random_state=0).fit(X)
samples = est.sample(1000, random_state=0)

# %%
# The trajectories of 300 noise points, in the data's units.
noise = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
times = torch.linspace(0, 1, 6)
with torch.no_grad():
    path = odeint(est.vector_field_, noise, times, rtol=1e-6, atol=1e-6)
path = path.numpy() * est.scale_ + est.mean_

fig, axes = plt.subplots(1, len(times) + 1, figsize=(15, 2.8), sharex=True, sharey=True)
for ax, t, points in zip(axes[:-1], times, path, strict=True):
    ax.scatter(*points.T, s=2)
    ax.set_title(f"t = {float(t):.1f}")
axes[-1].scatter(*samples.T, s=1, color="tab:orange")
axes[-1].set_title("sample(1000)")
for ax in axes:
    ax.set_aspect("equal")
fig.tight_layout()
