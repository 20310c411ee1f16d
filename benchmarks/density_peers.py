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
- ``TimedNSF``: zuko's neural spline flow trained by maximum likelihood
  with Adam for a given wall time, keeping the weights with the best
  log-likelihood on a 10% validation split.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

__all__ = ["BICGaussianMixture", "CrossValidatedKDE", "ScottKDE", "TimedNSF"]


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


class TimedNSF(_Standardized):
    """zuko.flows.NSF (5 transforms, 2 x 128 hidden units, 8 bins)."""

    def __init__(self, seconds, random_state=0, batch_size=512, learning_rate=1e-3):
        self.seconds = seconds
        self.random_state = random_state
        self.batch_size = batch_size
        self.learning_rate = learning_rate

    def fit(self, X):
        import zuko

        torch.manual_seed(self.random_state)
        Z = torch.as_tensor(self._standardize(X, fit=True), dtype=torch.float32)
        order = torch.randperm(len(Z))
        n_valid = max(1, len(Z) // 10)
        valid, train = Z[order[:n_valid]], Z[order[n_valid:]]
        flow = zuko.flows.NSF(Z.shape[1], transforms=5, hidden_features=(128, 128))
        optimizer = torch.optim.Adam(flow.parameters(), lr=self.learning_rate)
        best_score, best_state = -np.inf, None
        start, step = time.perf_counter(), 0
        while True:
            rows = torch.randint(len(train), (self.batch_size,))
            loss = -flow().log_prob(train[rows]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            out_of_time = time.perf_counter() - start > self.seconds
            if step % 100 == 0 or out_of_time:
                with torch.no_grad():
                    score = flow().log_prob(valid).mean().item()
                if score > best_score:
                    best_score, best_state = score, copy.deepcopy(flow.state_dict())
            if out_of_time:
                break
        flow.load_state_dict(best_state)
        self.flow_, self.n_iter_ = flow, step
        return self

    def score_samples(self, X):
        Z = torch.as_tensor(self._standardize(X), dtype=torch.float32)
        with torch.no_grad():
            return self.flow_().log_prob(Z).double().numpy() + self.log_jacobian_
