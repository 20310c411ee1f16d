"""Early stopping: the held-out rows, their score, the best weights, and
how the training loop and the estimator use them."""

import numpy as np
import pytest
import torch
from _data import TINY, blobs
from scipy.stats import multivariate_normal

from skflow import FlowMatchingDensity
from skflow._early_stopping import BestWeights, HeldOutScore, held_out_rows
from skflow._nets import VectorField
from skflow._ode import log_likelihood
from skflow._paths import make_path
from skflow._training import train_vector_field


def _rng():
    return np.random.RandomState(0)


def test_held_out_rows_are_the_fraction_of_distinct_rows():
    rows = held_out_rows(np.ones(100), 0.2, max_rows=512, rng=_rng())
    assert len(rows) == 20 == len(set(rows.tolist()))
    assert rows.min() >= 0 and rows.max() < 100
    # The same generator state holds out the same rows.
    np.testing.assert_array_equal(rows, held_out_rows(np.ones(100), 0.2, 512, _rng()))


def test_at_most_max_rows_are_held_out():
    assert len(held_out_rows(np.ones(10_000), 0.1, max_rows=512, rng=_rng())) == 512


@pytest.mark.parametrize(
    "weights, fraction",
    [
        (np.ones(4), 0.1),  # 0.4 rows round to none
        (np.ones(2), 0.9),  # 1.8 rows round to every row
        (np.array([1.0, 0, 0, 0]), 0.5),  # one side has no weight
        (np.array([0.0, 0, 0, 1]), 0.75),
    ],
    ids=["rounds-to-none", "rounds-to-all", "one-side-weightless", "other-side"],
)
def test_no_rows_are_held_out_when_a_side_would_be_empty(weights, fraction):
    # For the weighted cases every permutation leaves the single weighted
    # row on one side: 2 of 4 rows held out, or 3 of 4.
    for seed in range(5):
        rng = np.random.RandomState(seed)
        assert held_out_rows(weights, fraction, 512, rng) is None


class _Linear(torch.nn.Module):
    """A field whose score changes with one weight."""

    def __init__(self, value):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(float(value)))


def test_best_weights_keep_a_copy_of_the_best_and_stop_after_patience():
    best = BestWeights(n_iter_no_change=2)
    module = _Linear(1.0)
    assert not best.offer(module, 1.0)
    with torch.no_grad():
        module.weight.fill_(2.0)
    assert not best.offer(module, 3.0)
    with torch.no_grad():
        module.weight.fill_(5.0)  # the kept state is a copy, not a view
    assert not best.offer(module, 3.0)  # a tie is no improvement
    assert best.offer(module, 0.5)  # the second check without one: stop
    assert best.scores == [1.0, 3.0, 3.0, 0.5]
    assert best.best == 3.0
    assert best.state["weight"].item() == 2.0


def test_without_patience_best_weights_never_stop():
    best = BestWeights(n_iter_no_change=None)
    module = _Linear(0.0)
    assert not any(best.offer(module, -float(k)) for k in range(50))
    assert best.best == 0.0 and len(best.scores) == 50


class _Still(torch.nn.Module):
    """v = 0: the flow is the identity, so log p(z) is the base density."""

    divergence_directions = 99  # as costly as an MLP's in high dimension

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, t, x):
        return 0 * x + 0 * self.unused


class _LinearField(torch.nn.Module):
    """v = A z, whose exact divergence (tr A) costs ``directions`` passes."""

    def __init__(self, A, directions):
        super().__init__()
        self.A = torch.nn.Parameter(A)
        self.divergence_directions = directions

    def forward(self, t, x):
        return x @ self.A.T


@pytest.mark.parametrize("n_features", [2, 5], ids=["exact", "hutchinson"])
def test_held_out_score_is_the_weighted_mean_log_density(n_features):
    # Up to exact_up_to = 3 features the divergence is exact, above it is a
    # Hutchinson estimate; both are 0 for v = 0, so the score is exact.
    z = torch.as_tensor(blobs(20, n_features), dtype=torch.float64)
    weights = torch.arange(1, 21, dtype=torch.float64)
    score = HeldOutScore(
        z,
        weights,
        make_path("fm", 0.01),
        None,
        torch.Generator().manual_seed(0),
        n_steps=4,
        exact_up_to=3,
    )
    assert (score.probes is None) == (n_features <= 3)
    log_density = multivariate_normal(np.zeros(n_features)).logpdf(z.numpy())
    expected = np.average(log_density, weights=weights.numpy())
    assert score(_Still()) == pytest.approx(expected, rel=1e-12)


def test_held_out_score_is_exact_where_the_divergence_is_cheap():
    # Five features: an MLP-like field (5 directions) gets the fixed
    # Hutchinson probes, a HollowNet-like one (1 direction) the exact trace,
    # which differ for a non-diagonal A.
    z = torch.as_tensor(blobs(20, 5), dtype=torch.float64)
    A = torch.as_tensor(blobs(5, 5, seed=1), dtype=torch.float64)
    path = make_path("fm", 0.01)
    score = HeldOutScore(
        z,
        torch.ones(20, dtype=torch.float64),
        path,
        None,
        torch.Generator().manual_seed(0),
        n_steps=4,
        exact_up_to=3,
    )
    exact, _ = log_likelihood(
        _LinearField(A, 1), z, path.log_base_density, solver="rk4", n_steps=4
    )
    assert score(_LinearField(A, 1)) == pytest.approx(exact.mean().item(), rel=1e-12)
    assert abs(score(_LinearField(A, 5)) - exact.mean().item()) > 1e-3


def test_held_out_score_draws_its_dequantization_noise_once():
    z = torch.zeros(50, 2, dtype=torch.float64)
    width = torch.tensor([0.5, 0.0], dtype=torch.float64)  # only column 0
    score = HeldOutScore(
        z,
        torch.ones(50, dtype=torch.float64),
        make_path("fm", 0.01),
        width,
        torch.Generator().manual_seed(0),
        n_steps=4,
        exact_up_to=3,
    )
    assert 0 <= score.z[:, 0].min() and score.z[:, 0].max() < 0.5
    assert score.z[:, 0].std() > 0.1  # uniform on [0, 0.5): 0.14
    assert torch.equal(score.z[:, 1], z[:, 1])
    # Every checkpoint is scored on the same points.
    assert score(_Still()) == score(_Still())


def _train_blob(max_iter, **options):
    """A small float64 field trained on 64 fixed rows, seeded throughout."""
    torch.manual_seed(0)
    field = VectorField(2, (8,)).double()
    data = torch.randn(64, 2, dtype=torch.float64)
    return train_vector_field(
        field,
        make_path("fm", 0.01),
        data,
        torch.ones(64, dtype=torch.float64),
        max_iter=max_iter,
        batch_size=16,
        learning_rate=1e-2,
        generator=torch.Generator().manual_seed(0),
        **options,
    )


def _scripted_training(scores, n_iter_no_change):
    """Train with a validation 'score' read from ``scores``; record the weights."""
    seen = []

    def score(module):
        seen.append({k: v.clone() for k, v in module.state_dict().items()})
        return scores[len(seen) - 1]

    trained, losses, validation = _train_blob(
        len(scores) * 5,
        validation_score=score,
        validation_every=5,
        n_iter_no_change=n_iter_no_change,
    )
    return trained, losses, validation, seen


def test_stop_after_takes_the_first_steps_of_the_longer_schedule():
    # A refit stops at the step early stopping kept, with that run's learning
    # rate and moving average: the same weights, to the last bit in float64.
    _, _, _, seen = _scripted_training([0.0] * 6, None)
    stopped, losses, validation = _train_blob(30, stop_after=10)
    assert len(losses) == 10 and validation == []
    for name, tensor in stopped.state_dict().items():
        torch.testing.assert_close(tensor, seen[1][name], rtol=0, atol=0)
    assert not torch.equal(seen[1]["mlp.0.weight"], seen[-1]["mlp.0.weight"])


def test_training_stops_after_n_iter_no_change_and_restores_the_best():
    scores = [1.0, 3.0, 2.0, 2.5, 2.9, 4.0, 0.0]
    trained, losses, validation, seen = _scripted_training(scores, n_iter_no_change=3)
    # Checks 3, 4 and 5 do not beat 3.0: training stops after 5 checks.
    assert validation == scores[:5]
    assert len(losses) == 25
    best = seen[1]
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(tensor, best[name], rtol=0, atol=0)
    # The last weights seen differ from the ones kept.
    assert not torch.equal(seen[-1]["mlp.0.weight"], best["mlp.0.weight"])


def test_without_patience_training_runs_to_max_iter_keeping_the_best():
    scores = [1.0, 5.0, 2.0, 2.0, 2.0, 2.0]
    trained, losses, validation, seen = _scripted_training(scores, None)
    assert len(losses) == 30 and validation == scores
    kept = trained.state_dict()["mlp.0.weight"]
    torch.testing.assert_close(kept, seen[1]["mlp.0.weight"])


def test_validation_split_is_held_out_and_scored():
    X = np.random.RandomState(0).normal(size=(300, 2))
    params = {**TINY, "max_iter": 200, "random_state": 0}
    est = FlowMatchingDensity(
        **params, validation_fraction=0.2, n_iter_no_change=1000
    ).fit(X)
    # A short fit is checked every 80 steps and at its last (80, 160,
    # 200), each check a mean log density of 60 held-out rows.
    assert len(est.validation_scores_) == 3
    assert all(np.isfinite(est.validation_scores_))
    assert est.n_iter_ == 200
    no_split = FlowMatchingDensity(**params, validation_fraction=0).fit(X)
    assert no_split.validation_scores_ == []
    no_stopping = FlowMatchingDensity(**params, n_iter_no_change=None).fit(X)
    assert no_stopping.validation_scores_ == []


@pytest.mark.filterwarnings("ignore:Feature")  # one weighted row is constant
@pytest.mark.parametrize(
    ("fraction", "sample_weight"), [(0.1, None), (0.5, [1.0, 0, 0, 0])]
)
def test_validation_is_skipped_when_a_side_would_be_empty(fraction, sample_weight):
    X = np.random.RandomState(0).normal(size=(4, 2))
    # 10% of 4 rows rounds to 0; with one weighted row, the held-out half
    # would leave training without weight or be weightless itself.
    est = FlowMatchingDensity(**TINY, validation_fraction=fraction, random_state=0).fit(
        X, sample_weight=sample_weight
    )
    assert est.validation_scores_ == []
