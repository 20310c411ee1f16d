"""The peers of the density and anomaly benchmarks, each in a standard setting.

All of them work on standardized data and return log densities in the
caller's units (the standardization's Jacobian included), like skflow:

- ``CrossValidatedKDE``: Gaussian KDE, bandwidth chosen by 5-fold
  cross-validated log-likelihood, scored exactly (a log-sum-exp over every
  training point; scikit-learn's tree KDE loses accuracy far from the
  data, scikit-learn issue 7492).
- ``ScottKDE``: the same with Scott's bandwidth n^(-1 / (d + 4)).
- ``BICGaussianMixture``: full-covariance GaussianMixture, number of
  components chosen by BIC.
- ``EarlyStoppedNSF``: zuko's neural spline flow trained by maximum
  likelihood with Adam and skflow's early stopping on a 10% validation
  split (``fit_by_maximum_likelihood``, which ``conditional_density``'s
  NSF shares).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from skflow._recipe import Recipe

__all__ = [
    "BICGaussianMixture",
    "CrossValidatedKDE",
    "EarlyStoppedNSF",
    "ScottKDE",
    "fit_by_maximum_likelihood",
]


class _Standardized:
    """Fit on standardized data; scores carry the standardization's Jacobian."""

    def _standardize(self, X, fit=False):
        if fit:
            self.scaler_ = StandardScaler().fit(X)
            self.log_jacobian_ = -np.log(self.scaler_.scale_).sum()
        return self.scaler_.transform(X)


def _gaussian_kde_log_density(Z, data, bandwidths, block_rows=512):
    """Exact log densities of Z, one row per bandwidth: each block's
    distances are computed once for every bandwidth."""
    bandwidths = np.atleast_1d(bandwidths)
    n, d = data.shape
    normalizer = np.log(n) + d * np.log(bandwidths) + 0.5 * d * np.log(2 * np.pi)
    out = np.empty((len(bandwidths), len(Z)))
    data_norms = (data**2).sum(1)
    for start in range(0, len(Z), block_rows):
        rows = Z[start : start + block_rows]
        squared = (rows**2).sum(1)[:, None] + data_norms[None] - 2 * rows @ data.T
        squared = np.maximum(squared, 0)
        for i, bandwidth in enumerate(bandwidths):
            out[i, start : start + block_rows] = logsumexp(
                -0.5 * squared / bandwidth**2, axis=1
            )
    return out - normalizer[:, None]


class _ExactKDE(_Standardized):
    """Scores by a log-sum-exp over every (standardized) training point."""

    def score_samples(self, X):
        Z = self._standardize(X)
        return (
            _gaussian_kde_log_density(Z, self.data_, self.bandwidth_)[0]
            + self.log_jacobian_
        )


class ScottKDE(_ExactKDE):
    def fit(self, X):
        self.data_ = self._standardize(X, fit=True)
        n, d = self.data_.shape
        self.bandwidth_ = n ** (-1.0 / (d + 4))
        return self


class CrossValidatedKDE(_ExactKDE):
    bandwidths = np.logspace(-2, 0.5, 26)

    def __init__(self, random_state=0):
        self.random_state = random_state

    def fit(self, X):
        Z = self._standardize(X, fit=True)
        folds = KFold(5, shuffle=True, random_state=self.random_state).split(Z)
        scores = np.zeros(len(self.bandwidths))
        for train, test in folds:
            scores += _gaussian_kde_log_density(
                Z[test], Z[train], self.bandwidths
            ).mean(axis=1)
        self.bandwidth_ = self.bandwidths[np.argmax(scores)]
        self.data_ = Z
        return self


class BICGaussianMixture(_Standardized):
    def __init__(
        self,
        random_state=0,
        candidates=(1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50),
    ):
        self.random_state = random_state
        self.candidates = candidates

    def fit(self, X):
        Z = self._standardize(X, fit=True)
        best = None
        for k in self.candidates:
            if k > len(Z) // 2:
                break
            model = GaussianMixture(k, random_state=self.random_state).fit(Z)
            bic = model.bic(Z)
            if best is None or bic < best[0]:
                best = (bic, model)
        self.model_ = best[1]
        self.n_components_ = self.model_.n_components
        return self

    def score_samples(self, X):
        return self.model_.score_samples(self._standardize(X)) + self.log_jacobian_


def fit_by_maximum_likelihood(
    make_flow,
    log_prob,
    n_rows,
    max_steps,
    *,
    batch_size=512,
    learning_rate=1e-3,
    validation_fraction=0.1,
    n_iter_no_change=10,
):
    """Train a flow with Adam on the log-likelihood of random batches, with
    skflow's early stopping: hold out ``validation_fraction`` of the rows,
    check them as often as skflow does for ``max_steps`` steps, keep the
    best weights, stop after ``n_iter_no_change`` checks without improvement.

    ``make_flow()`` builds the flow (after the split, so the draws match
    earlier runs); ``log_prob(flow, rows)`` gives the log densities of the
    rows with those indices. Returns the trained flow and its step count.
    """
    order = torch.randperm(n_rows)
    n_valid = max(1, int(validation_fraction * n_rows))
    valid, train = order[:n_valid], order[n_valid:]
    flow = make_flow()
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    every = Recipe().validation_every(max_steps)
    best_score, best_state, no_change = -np.inf, None, 0
    for step in range(1, max_steps + 1):
        rows = train[torch.randint(len(train), (batch_size,))]
        loss = -log_prob(flow, rows).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every and step < max_steps:
            continue
        with torch.no_grad():
            score = log_prob(flow, valid).mean().item()
        if score > best_score:
            best_score, no_change = score, 0
            best_state = copy.deepcopy(flow.state_dict())
        else:
            no_change += 1
            if no_change >= n_iter_no_change:
                break
    flow.load_state_dict(best_state)
    return flow, step


class EarlyStoppedNSF(_Standardized):
    """zuko.flows.NSF (5 transforms, 2 x 128 hidden units, 8 bins) trained
    by :func:`fit_by_maximum_likelihood`, at most ``max_steps`` steps."""

    def __init__(self, max_steps, random_state=0):
        self.max_steps = max_steps
        self.random_state = random_state

    def fit(self, X):
        import zuko

        torch.manual_seed(self.random_state)
        Z = torch.as_tensor(self._standardize(X, fit=True), dtype=torch.float32)
        self.flow_, self.n_iter_ = fit_by_maximum_likelihood(
            lambda: zuko.flows.NSF(
                Z.shape[1], transforms=5, hidden_features=(128, 128)
            ),
            lambda flow, rows: flow().log_prob(Z[rows]),
            len(Z),
            self.max_steps,
        )
        return self

    def score_samples(self, X):
        Z = torch.as_tensor(self._standardize(X), dtype=torch.float32)
        with torch.no_grad():
            return self.flow_().log_prob(Z).double().numpy() + self.log_jacobian_
