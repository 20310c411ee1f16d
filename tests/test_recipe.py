"""The training recipe: max_iter="auto", early stopping, dequantization."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import poisson

from skflow import FlowMatchingDensity
from skflow._nets import VectorField
from skflow._paths import make_path
from skflow._training import _adam, train_vector_field

TINY = {"hidden_layer_sizes": (16, 16), "batch_size": 32, "random_state": 0}


def test_auto_max_iter_grows_with_the_square_root_of_the_rows():
    X = np.random.RandomState(0).normal(size=(50, 2))
    est = FlowMatchingDensity(**TINY, n_iter_no_change=None).fit(X)
    # 70 sqrt(50) = 495 steps, raised to the floor of 2000.
    assert est.n_iter_ == len(est.loss_curve_) == 2000
    assert est.validation_scores_ == []
    assert est._max_iter(10_000) == 7_000
    assert est._max_iter(10**8) == 20_000


def test_auto_max_iter_keeps_25_validation_checks_at_its_floor():
    X = np.random.RandomState(0).normal(size=(50, 2))
    est = FlowMatchingDensity(**TINY, n_iter_no_change=1000).fit(X)
    # 2000 steps, one check every 80: short fits get fewer, auto ones not.
    assert est.n_iter_ == 2000
    assert len(est.validation_scores_) == 25


def _scripted_training(scores, n_iter_no_change):
    """Train with a validation 'score' read from ``scores``; record the weights."""
    torch.manual_seed(0)
    field = VectorField(2, (8,)).double()
    data = torch.randn(64, 2, dtype=torch.float64)
    seen = []

    def score(module):
        seen.append({k: v.clone() for k, v in module.state_dict().items()})
        return scores[len(seen) - 1]

    trained, losses, validation = train_vector_field(
        field,
        make_path("fm", 0.01),
        data,
        torch.ones(64, dtype=torch.float64),
        max_iter=len(scores) * 5,
        batch_size=16,
        learning_rate=1e-2,
        generator=torch.Generator().manual_seed(0),
        validation_score=score,
        validation_every=5,
        n_iter_no_change=n_iter_no_change,
    )
    return trained, losses, validation, seen


def test_early_stopping_stops_after_n_iter_no_change_and_restores_the_best():
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


@pytest.mark.skipif(
    torch.torch_version.TorchVersion(torch.__version__) < "2.4",
    reason="torch has a fused Adam for the CPU from 2.4 on",
)
def test_adam_is_fused_and_makes_the_default_update():
    torch.manual_seed(0)
    fields = [VectorField(2, (8,)).double() for _ in range(2)]
    fields[1].load_state_dict(fields[0].state_dict())
    fused = _adam(fields[0].parameters(), 1e-2)
    plain = torch.optim.Adam(fields[1].parameters(), lr=1e-2)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(5):
        t, x = torch.rand(32, 1, dtype=torch.float64), torch.randn(32, 2).double()
        for field, optimizer in zip(fields, (fused, plain), strict=True):
            optimizer.zero_grad()
            field(t, x).square().mean().backward()
            optimizer.step()
    # The same float64 arithmetic up to the order of operations.
    for kept, reference in zip(*(f.parameters() for f in fields), strict=True):
        torch.testing.assert_close(kept, reference, rtol=1e-12, atol=1e-12)


def test_adam_falls_back_where_the_device_has_no_fused_kernel(monkeypatch):
    original = torch.optim.Adam

    def adam_without_fused_kernel(params, lr, fused=None):
        params = list(params)  # as torch's Adam, which fails after that
        if fused:
            raise RuntimeError("`fused=True` requires ... supported devices")
        return original(params, lr=lr)

    monkeypatch.setattr(torch.optim, "Adam", adam_without_fused_kernel)
    field = VectorField(2, (8,))
    optimizer = _adam(field.parameters(), 1e-2)
    assert not optimizer.defaults["fused"]
    # The parameters survived the failed first attempt.
    assert len(optimizer.param_groups[0]["params"]) == len(list(field.parameters()))


def test_validation_split_is_held_out_and_scored():
    X = np.random.RandomState(0).normal(size=(300, 2))
    est = FlowMatchingDensity(
        **TINY, max_iter=200, validation_fraction=0.2, n_iter_no_change=1000
    ).fit(X)
    # A short fit is checked every 80 steps and at its last (80, 160,
    # 200), each check a mean log density of 60 held-out rows.
    assert len(est.validation_scores_) == 3
    assert all(np.isfinite(est.validation_scores_))
    assert est.n_iter_ == 200
    no_split = FlowMatchingDensity(**TINY, max_iter=200, validation_fraction=0).fit(X)
    assert no_split.validation_scores_ == []


@pytest.mark.filterwarnings("ignore:Feature")  # one weighted row is constant
@pytest.mark.parametrize(
    ("fraction", "sample_weight"), [(0.1, None), (0.5, [1.0, 0, 0, 0])]
)
def test_validation_is_skipped_when_a_side_would_be_empty(fraction, sample_weight):
    X = np.random.RandomState(0).normal(size=(4, 2))
    # 10% of 4 rows rounds to 0; with one weighted row, the held-out half
    # would leave training without weight or be weightless itself.
    est = FlowMatchingDensity(**TINY, max_iter=20, validation_fraction=fraction)
    est.fit(X, sample_weight=sample_weight)
    assert est.validation_scores_ == []


def _counts_and_reals(n, seed):
    rng = np.random.RandomState(seed)
    return np.column_stack([rng.poisson(3.0, n), rng.normal(size=n)])


def test_integer_columns_are_discrete_by_default():
    X = _counts_and_reals(2000, 0)
    est = FlowMatchingDensity(
        hidden_layer_sizes=(64, 64),
        max_iter=1500,
        dtype="float64",
        random_state=0,
    ).fit(X)
    np.testing.assert_array_equal(est.integer_columns_, [True, False])
    # Standardized as X + U: the mean of a count column moves by 1/2.
    assert est.mean_[0] == pytest.approx(X[:, 0].mean() + 0.5)

    X_test = _counts_and_reals(2000, 1)
    scores = est.score_samples(X_test)
    # A lower bound on log P(count) + log p(real): it cannot beat the truth
    # on average by more than the sampling error (0.03 at 2,000 rows), and
    # a reasonable fit comes within 0.15 nats of it.
    truth = poisson.logpmf(X_test[:, 0], 3.0) - 0.5 * (
        X_test[:, 1] ** 2 + np.log(2 * np.pi)
    )
    assert scores.mean() < truth.mean() + 0.03
    assert scores.mean() > truth.mean() - 0.15

    samples = est.sample(500, random_state=0)
    np.testing.assert_array_equal(samples[:, 0], np.floor(samples[:, 0]))
    assert not np.array_equal(samples[:, 1], np.floor(samples[:, 1]))


def test_which_columns_are_dequantized():
    rng = np.random.RandomState(0)
    whole = rng.poisson(3.0, 200).astype(float)
    X = np.column_stack(
        [
            whole,
            np.full(200, 4.0),  # constant, but whole: uniform on [4, 5)
            1e30 * rng.normal(size=200),  # whole only because it is huge
            whole + 0.5,
        ]
    )
    params = {**TINY, "max_iter": 5}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constant whole column is not constant
        est = FlowMatchingDensity(**params).fit(X)
    np.testing.assert_array_equal(est.integer_columns_, [True, True, False, False])
    assert est.scale_[1] == pytest.approx(np.sqrt(1 / 12))
    est = FlowMatchingDensity(**params, dequantize=False).fit(X[:, [0, 2, 3]])
    np.testing.assert_array_equal(est.integer_columns_, [False, False, False])
    assert est.mean_[0] == pytest.approx(whole.mean())


def test_dequantization_noise_does_not_depend_on_the_chunking():
    X = _counts_and_reals(100, 0)
    params = {**TINY, "max_iter": 50, "solver": "rk4", "n_steps": 4}
    est = FlowMatchingDensity(**params, dequantize=True).fit(X)
    whole = est.score_samples(X)
    est.set_params(inference_batch_size=7)
    np.testing.assert_allclose(est.score_samples(X), whole, rtol=1e-6)
    # The same call twice gives the same draws.
    np.testing.assert_array_equal(est.score_samples(X), est.score_samples(X))
