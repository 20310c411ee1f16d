"""ConditionalFlowMatchingDensity: p(y | X) against closed forms, and its contract."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from _data import EXACT, FIXED_STEPS, TINY, record_training_argument
from numpy.testing import assert_allclose, assert_array_equal
from scipy.integrate import trapezoid
from scipy.stats import multivariate_normal
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skflow._training
from skflow import ConditionalFlowMatchingDensity, FlowMatchingDensity
from skflow._nets import FieldMixture
from skflow._paths import make_path
from skflow._recipe import Recipe


def heteroscedastic(n=300, n_targets=1, seed=0):
    """x ~ U(-1, 1)^2; y | x ~ N(x_0 + 0.5 x_1, (0.1 + 0.3 |x_0|)^2) per target."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    scale = 0.1 + 0.3 * np.abs(X[:, :1])
    y = X[:, :1] + 0.5 * X[:, 1:] + scale * rng.normal(size=(n, n_targets))
    return X, (y[:, 0] if n_targets == 1 else y)


class ConditionalGaussianField(torch.nn.Module):
    """The exact "fm" field (sigma 0) of y | x ~ N(A x + b, s(x)^2 C) on rows
    ``[y, x]``: for each row, GaussianField of tests/test_ode.py with that
    row's mean and covariance, and velocity 0 for x."""

    def __init__(self, A, b, C, s):
        super().__init__()
        self.A, self.b = torch.as_tensor(A), torch.as_tensor(b)
        self.C, self.s = torch.as_tensor(C), s
        self.n_targets = len(b)
        # What the estimator's chunking reads of a field.
        self.widest_layer, self.divergence_directions = 1, self.n_targets
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def mean_and_covariance(self, x):
        mean = x @ self.A.T + self.b
        covariance = self.s(x)[:, None, None] ** 2 * self.C
        return mean, covariance

    def forward(self, t, state):
        k = self.n_targets
        y, x = state[:, :k], state[:, k:]
        mean, covariance = self.mean_and_covariance(x)
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1, 1)
        eye = torch.eye(k, dtype=torch.float64)
        sigma_t = t**2 * covariance + (1 - t) ** 2 * eye
        gain = (t * covariance - (1 - t) * eye) @ torch.linalg.inv(sigma_t)
        centred = (y - t[:, :, 0] * mean).unsqueeze(-1)
        velocity = mean + (gain @ centred).squeeze(-1)
        return torch.cat([velocity, torch.zeros_like(x)], dim=1)


@pytest.mark.parametrize("n_targets", [1, 2])
def test_closed_form_conditional_gaussian_in_the_callers_units(n_targets):
    # A fitted estimator whose field is replaced by the exact field of a
    # known conditional Gaussian (standardized units) must score
    # log N(y | A x + b, s(x)^2 C) in the caller's units: the solver, the
    # condition carried along, both standardizations and y's Jacobian.
    X, y = heteroscedastic(50, n_targets)
    est = ConditionalFlowMatchingDensity(
        **TINY, dtype="float64", rtol=1e-10, atol=1e-10, random_state=0
    ).fit(X, y)
    A = np.array([[0.8, -0.5], [0.3, 0.6]])[:n_targets]
    b = np.array([0.2, -0.4])[:n_targets]
    C = np.array([[1.0, 0.6], [0.6, 1.5]])[:n_targets, :n_targets]
    field = ConditionalGaussianField(A, b, C, lambda x: 0.3 + 0.4 * x[:, 0].abs())
    est.vector_field_, est.path_ = field, make_path("fm", 0.0)
    est.y_mean_, est.y_scale_ = (
        np.array([1.0, -2.0])[:n_targets],
        np.array([2.0, 0.5])[:n_targets],
    )
    est.X_mean_, est.X_scale_ = np.array([-1.0, 0.5]), np.array([3.0, 0.2])

    rng = np.random.RandomState(1)
    X_test = est.X_mean_ + est.X_scale_ * rng.uniform(-2, 2, size=(40, 2))
    x_std = (X_test - est.X_mean_) / est.X_scale_
    mean, covariance = field.mean_and_covariance(torch.from_numpy(x_std))
    z = mean.numpy() + rng.normal(size=(40, n_targets)) * 1.5
    y_test = est.y_mean_ + est.y_scale_ * z
    expected = (
        np.array(
            [
                multivariate_normal(mean[i].numpy(), covariance[i].numpy()).logpdf(z[i])
                for i in range(40)
            ]
        )
        - np.log(est.y_scale_).sum()
    )
    got = est.score_samples(X_test, y_test if n_targets > 1 else y_test[:, 0])
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("n_targets", [1, 2])
def test_conditional_density_integrates_to_one_for_fixed_x(n_targets):
    # A normalizing flow's density integrates to 1 whatever its training.
    # Given these x, y's mean is x_0 + 0.5 x_1 and its spread 0.25 or
    # 0.34 (a short fit makes it sharper, down to about 0.14): the grid
    # covers the mean +- 2.5 (over 7 spreads) at a third of the sharpest
    # spread. Tolerance 2%: at this grid step (0.05) this model's 2-D
    # integral over a wider grid was measured within 0.2% of 1, and at
    # twice the step 3% off.
    X, y = heteroscedastic(400, n_targets)
    est = ConditionalFlowMatchingDensity(
        hidden_layer_sizes=(32, 32), max_iter=300, random_state=0
    ).fit(X, y)
    for x in ([0.5, -0.2], [-0.8, 0.9]):
        axis = x[0] + 0.5 * x[1] + np.linspace(-2.5, 2.5, 101)
        if n_targets == 1:
            density = np.exp(est.score_samples(np.tile(x, (101, 1)), axis))
            total = trapezoid(density, axis)
        else:
            Y = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
            density = np.exp(est.score_samples(np.tile(x, (len(Y), 1)), Y))
            total = trapezoid(trapezoid(density.reshape(101, 101), axis, axis=1), axis)
        assert abs(total - 1) < 0.02, (x, total)


@pytest.fixture(scope="module")
def branching():
    """y | x: one mode at 0 where x < 0; two at 2x - 1 and 2x + 1 where
    x > 0 (equal weights; spread 0.15 everywhere). E[y | x] = 2x for x > 0."""
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, size=3000)
    branch = rng.choice([-1.0, 1.0], size=3000)
    y = np.where(x > 0, 2 * x + branch, 0.0) + 0.15 * rng.normal(size=3000)
    return ConditionalFlowMatchingDensity(
        hidden_layer_sizes=(64, 64), max_iter=1500, random_state=0
    ).fit(x[:, None], y)


def test_samples_follow_the_condition_bimodal_here_unimodal_there(branching):
    # A model that ignored x would draw the marginal of y at both ends; the
    # conditional one must put at least 85% of its draws within 0.5 of the
    # right modes (the truth: > 99.9%), and draw each of the two modes at
    # x = 0.9 for between 30% and 70% of the draws (the truth: 50%).
    draws = branching.sample(np.array([[0.9], [-0.9]]), n_samples=1000, random_state=0)
    bimodal, unimodal = draws
    near_a_mode = np.minimum(np.abs(bimodal - 0.8), np.abs(bimodal - 2.8)) < 0.5
    assert near_a_mode.mean() > 0.85
    assert 0.3 < (bimodal > 1.8).mean() < 0.7
    assert (np.abs(unimodal) < 0.5).mean() > 0.85


def test_a_point_typical_overall_can_be_unlikely_given_its_x(branching):
    # y = 1.8 is common overall (a mode of the rows near x = 0.4), but given
    # x = 0.9 it lies halfway between the modes 0.8 and 2.8, 6.7 spreads from
    # each (22 nats below a mode in truth): the conditional density must rank
    # it well below a point on a mode. A model blind to x would rank the
    # three points alike; a short fit blurs the modes, hence 3 nats.
    scores = branching.score_samples([[0.9], [0.9], [0.4]], [1.8, 2.8, 1.8])
    assert scores[0] < scores[1] - 3
    assert scores[0] < scores[2] - 3


def test_predict_estimates_the_conditional_mean(branching):
    # E[y | x] = 2x for x > 0 and 0 below. Tolerance 0.1 RMS over a grid
    # that avoids the jump at 0: the Monte Carlo error of 200 draws is
    # 1 / sqrt(200) = 0.07 at most (the modes are 1 from the mean), and
    # antithetic pairs make it smaller; a constant would miss by 0.6.
    grid = np.r_[np.linspace(-0.9, -0.2, 8), np.linspace(0.2, 0.9, 8)][:, None]
    truth = np.where(grid[:, 0] > 0, 2 * grid[:, 0], 0.0)
    error = branching.predict(grid, n_samples=200) - truth
    assert np.sqrt(np.mean(error**2)) < 0.1


def test_scores_are_in_the_units_of_y_only():
    # Rescaling y by c moves every log density by -log c per target (the
    # Jacobian); rescaling X changes nothing: both are standardized away,
    # and the standardized data, hence the training, are the same.
    X, y = heteroscedastic(200, 2)
    params = dict(**EXACT, random_state=0)
    base = ConditionalFlowMatchingDensity(**params).fit(X, y).score_samples(X, y)
    scaled_y = ConditionalFlowMatchingDensity(**params).fit(X, 10 * y)
    assert_allclose(scaled_y.score_samples(X, 10 * y), base - 2 * np.log(10), atol=1e-8)
    scaled_X = ConditionalFlowMatchingDensity(**params).fit(1e3 * X + 5, y)
    assert_allclose(scaled_X.score_samples(1e3 * X + 5, y), base, atol=1e-8)


def test_one_dimensional_and_column_y_give_the_same_model_in_their_shapes():
    X, y = heteroscedastic(100)
    flat = ConditionalFlowMatchingDensity(**TINY, random_state=0).fit(X, y)
    column = ConditionalFlowMatchingDensity(**TINY, random_state=0).fit(X, y[:, None])
    assert flat.n_targets_ == column.n_targets_ == 1
    assert_array_equal(flat.score_samples(X, y), column.score_samples(X, y[:, None]))
    assert flat.sample(X[:3], n_samples=4, random_state=0).shape == (3, 4)
    assert column.sample(X[:3], n_samples=4, random_state=0).shape == (3, 4, 1)
    assert flat.predict(X[:3]).shape == (3,)
    assert column.predict(X[:3]).shape == (3, 1)
    assert_array_equal(flat.predict(X[:3]), column.predict(X[:3])[:, 0])


def test_scores_and_predictions_of_a_row_do_not_depend_on_the_other_rows():
    # scikit-learn's subset and order checks call score_samples without y,
    # so they are expected failures: the same properties are checked here.
    # float64 rowwise solves: a row's result is its own up to round-off.
    X, y = heteroscedastic(120)
    est = ConditionalFlowMatchingDensity(**TINY, dtype="float64", random_state=0)
    est.fit(X, y)
    order = np.random.RandomState(0).permutation(len(X))
    scores, means = est.score_samples(X, y), est.predict(X, n_samples=8)
    assert_allclose(est.score_samples(X[order], y[order]), scores[order], atol=1e-10)
    assert_allclose(est.score_samples(X[:7], y[:7]), scores[:7], atol=1e-10)
    assert_allclose(est.predict(X[order], n_samples=8), means[order], atol=1e-10)
    assert_allclose(est.predict(X[5:9], n_samples=8), means[5:9], atol=1e-10)


def test_pipeline_cross_validation_and_grid_search_rank_by_likelihood():
    X, y = heteroscedastic(200)
    pipe = make_pipeline(
        StandardScaler(), ConditionalFlowMatchingDensity(**TINY, random_state=0)
    ).fit(X, y)
    transformed = pipe[:-1].transform(X)
    assert pipe.score(X, y) == pipe[-1].score(transformed, y)
    assert pipe.score(X, y) == np.mean(pipe[-1].score_samples(transformed, y))
    assert pipe.predict(X).shape == (200,)
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    search = GridSearchCV(
        ConditionalFlowMatchingDensity(**TINY, random_state=0),
        {"sigma": [0.01, 0.1], "path": ["fm", "ot-cfm"]},
        cv=2,
    ).fit(X, y)
    means = search.cv_results_["mean_test_score"]
    assert search.best_score_ == np.max(means)


def test_score_is_the_weighted_mean_conditional_log_likelihood():
    X, y = heteroscedastic(60)
    est = ConditionalFlowMatchingDensity(**EXACT, random_state=0).fit(X, y)
    weights = np.arange(60.0)
    expected = np.average(est.score_samples(X, y), weights=weights)
    assert est.score(X, y, sample_weight=weights) == pytest.approx(expected)


def test_training_adds_the_recipes_noise_to_the_conditions_only(monkeypatch):
    # The noise follows the training rows: held-out pairs and rows of
    # weight 0 do not count. The unconditional estimator adds none.
    seen = record_training_argument(monkeypatch, "condition_noise")
    recipe = dataclasses.replace(Recipe(), condition_noise_scale=0.5)
    noisy = type("Noisy", (ConditionalFlowMatchingDensity,), {"_recipe": recipe})
    X, y = heteroscedastic(110)
    weights = np.r_[np.ones(100), np.zeros(10)]
    noisy(**TINY, validation_fraction=0.1, random_state=0).fit(
        X, y, sample_weight=weights
    )
    FlowMatchingDensity(**TINY, random_state=0).fit(X)
    # 90 rows of 2 conditions: 0.5 * 90^(-1/6), in the early-stopped
    # training and in the refits on every row that follow it on small data.
    noise = pytest.approx(0.5 * 90 ** (-1 / 6))
    refits = ConditionalFlowMatchingDensity._refit_members
    assert seen == [noise] * (1 + refits) + [0.0]


# Checked at steps 80, 160 and 200 of 200; early stopping keeps one of them.
REFIT = {**TINY, "max_iter": 200, "random_state": 0}


def _with_refit_max_rows(rows):
    return type("Refit", (ConditionalFlowMatchingDensity,), {"_refit_max_rows": rows})


def _with_refit_members(k):
    return type("Members", (ConditionalFlowMatchingDensity,), {"_refit_members": k})


@contextlib.contextmanager
def _with_field(est, field):
    """``est`` with ``field`` in place of its own."""
    whole, est.vector_field_ = est.vector_field_, field
    try:
        yield est
    finally:
        est.vector_field_ = whole


def test_small_fits_train_again_on_every_row_up_to_the_step_kept(monkeypatch):
    X, y = heteroscedastic(200)
    checkpoint = _with_refit_max_rows(0)(**REFIT).fit(X, y)
    stops = record_training_argument(monkeypatch, "stop_after")
    refitted = ConditionalFlowMatchingDensity(**REFIT).fit(X, y)
    # The early-stopped training is the same; then each member's initial
    # weights train on all 200 rows up to the step of the check kept.
    assert refitted.validation_scores_ == checkpoint.validation_scores_
    assert refitted.loss_curve_ == checkpoint.loss_curve_
    kept_step = (80, 160, 200)[int(np.argmax(checkpoint.validation_scores_))]
    assert stops == [None] + [kept_step] * ConditionalFlowMatchingDensity._refit_members
    assert not np.allclose(refitted.score_samples(X, y), checkpoint.score_samples(X, y))
    # Above _refit_max_rows the model is the checkpoint itself.
    large = _with_refit_max_rows(199)(**REFIT).fit(X, y)
    assert_array_equal(large.score_samples(X, y), checkpoint.score_samples(X, y))


def test_the_refit_reports_its_progress(capsys):
    X, y = heteroscedastic(200)
    est = ConditionalFlowMatchingDensity(**REFIT, verbose=2).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    kept_step = (80, 160, 200)[int(np.argmax(est.validation_scores_))]
    refit = [line for line in lines if "refit step" in line]
    assert refit and f"refit step {kept_step}/{kept_step}," in refit[-1]


# Trainings: early stopping's, then the first member's refit, then the second's.
@pytest.mark.parametrize("training", [2, 3], ids=["first-member", "second-member"])
def test_an_interrupted_refit_keeps_the_checkpoint(monkeypatch, training):
    X, y = heteroscedastic(200)
    checkpoint = _with_refit_max_rows(0)(**REFIT).fit(X, y)
    schedule = skflow._training._learning_rate_factor
    trainings = []

    def interrupting(max_iter, warmup_fraction):
        factor = schedule(max_iter, warmup_fraction)
        trainings.append(max_iter)

        def interrupted(step):
            if len(trainings) == training and step == 5:
                raise KeyboardInterrupt
            return factor(step)

        return interrupted

    monkeypatch.setattr(skflow._training, "_learning_rate_factor", interrupting)
    with pytest.warns(UserWarning, match="after 4 of .*early stopping chose"):
        est = _with_refit_members(2)(**REFIT).fit(X, y)
    assert_array_equal(est.score_samples(X, y), checkpoint.score_samples(X, y))


def test_a_mixture_of_refits_averages_its_members_densities():
    X, y = heteroscedastic(200)
    single = _with_refit_members(1)(**REFIT).fit(X, y)
    mixture = _with_refit_members(3)(**REFIT).fit(X, y)
    assert type(single.vector_field_) is not FieldMixture
    members = mixture.vector_field_.members
    assert len(members) == 3
    # The first member is the one-member model; the others start from new
    # weights, so they differ.
    for got, expected in zip(
        members[0].state_dict().values(),
        single.vector_field_.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(got, expected)
    each = []
    for member in members:
        with _with_field(mixture, member):
            each.append(mixture.score_samples(X, y))
    assert not np.allclose(each[1], each[0])
    # log((p_1 + p_2 + p_3) / 3), row by row; the same solves, so to
    # round-off of the sum.
    expected = np.logaddexp.reduce(np.stack(each), axis=0) - np.log(3)
    assert_allclose(mixture.score_samples(X, y), expected, rtol=0, atol=1e-12)
    assert mixture.likelihood_error_["max"] < 0.1


def test_a_mixtures_draws_and_mean_come_from_its_members():
    # Fixed-step float64 solves: a draw depends on its noise and member
    # alone, so each of the mixture's draws is one member's draw of the
    # same noise, to round-off.
    X, y = heteroscedastic(200)
    est = ConditionalFlowMatchingDensity(**{**REFIT, **FIXED_STEPS})
    est.fit(X, y)
    conditions = X[:50]
    draws = est.sample(conditions, n_samples=20, random_state=0)
    by_member, means = [], []
    for member in est.vector_field_.members:
        with _with_field(est, member):
            by_member.append(est.sample(conditions, n_samples=20, random_state=0))
            means.append(est.predict(conditions))
    from_first = np.isclose(draws, by_member[0], rtol=0, atol=1e-10)
    from_second = np.isclose(draws, by_member[1], rtol=0, atol=1e-10)
    assert np.all(from_first | from_second)
    # Members drawn uniformly: 1,000 draws, so the share of the second is
    # 0.5 +- 0.016 (one standard deviation); 0.4 to 0.6 is 6 of them.
    share = np.mean(from_second & ~from_first)
    assert 0.4 < share < 0.6
    assert_allclose(est.predict(conditions), np.mean(means, axis=0), atol=1e-12)


def test_a_mixture_has_no_velocity_of_its_own():
    X, y = heteroscedastic(200)
    est = ConditionalFlowMatchingDensity(**REFIT).fit(X, y)
    with pytest.raises(TypeError, match="no velocity of its own"):
        est.vector_field_(torch.zeros(1), torch.zeros(1, 3))


def test_fine_tuning_keeps_a_single_refit():
    # Likelihood fine-tuning trains one field: with it, no mixture.
    X, y = heteroscedastic(200)
    est = ConditionalFlowMatchingDensity(**REFIT, likelihood_max_iter=2).fit(X, y)
    assert type(est.vector_field_) is not FieldMixture


def test_likelihood_error_is_measured_on_held_out_pairs_or_own_draws():
    X, y = heteroscedastic(100)
    for fraction in (0.1, 0.0):
        est = ConditionalFlowMatchingDensity(
            **TINY, validation_fraction=fraction, random_state=0
        ).fit(X, y)
        error = est.likelihood_error_
        assert set(error) == {"mean", "max", "n_rows"}
        # 10% held out; without, one draw for each training row's condition.
        assert error["n_rows"] == (10 if fraction else 100)
        assert 0 <= error["mean"] <= error["max"] < 0.1


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda e, X, y: e.fit(X, np.where(np.arange(len(y)) == 3, np.nan, y)),
            ValueError,
            "Input y contains NaN",
        ),
        (
            lambda e, X, y: e.fit(X[:-1], y),
            ValueError,
            "inconsistent numbers of samples",
        ),
        (lambda e, X, y: e.fit(X, None), ValueError, "requires y to be passed"),
        (
            lambda e, X, y: e.fit(X, y).score_samples(X, np.c_[y, y]),
            ValueError,
            r"y has 2 target\(s\), but \w+ was fitted with 1",
        ),
        (
            lambda e, X, y: e.fit(X, y).score_samples(X[:, :1], y),
            ValueError,
            "X has 1 features, but ConditionalFlowMatchingDensity is expecting 2",
        ),
        (lambda e, X, y: e.fit(X, y).sample(n_samples=3), TypeError, "X"),
        (lambda e, X, y: e.fit(X, y).sample(X, n_samples=0), ValueError, "n_samples"),
        (lambda e, X, y: e.score_samples(X, y), Exception, "not fitted"),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, match):
    X, y = heteroscedastic(40)
    with pytest.raises(error, match=match):
        call(ConditionalFlowMatchingDensity(**TINY, random_state=0), X, y)


def test_a_failed_refit_keeps_the_previous_model():
    X, y = heteroscedastic(60)
    est = ConditionalFlowMatchingDensity(**TINY, random_state=0).fit(X, y)
    scores = est.score_samples(X, y)
    with pytest.raises(ValueError):
        est.fit(X, np.full_like(y, np.inf))
    assert_array_equal(est.score_samples(X, y), scores)


def test_integer_targets_are_continuous_unless_asked():
    X, y = heteroscedastic(100)
    counts = np.round(3 * np.abs(y))
    est = ConditionalFlowMatchingDensity(**TINY, random_state=0).fit(X, counts)
    assert not est.integer_targets_.any()
    discrete = ConditionalFlowMatchingDensity(**TINY, dequantize=True, random_state=0)
    discrete.fit(X, counts)
    assert discrete.integer_targets_.all()
    draws = discrete.sample(X[:5], n_samples=20, random_state=0)
    assert_array_equal(draws, np.floor(draws))


def test_a_discrete_targets_score_depends_on_its_row_alone():
    X, y = heteroscedastic(60)
    counts = np.round(3 * np.abs(y))
    X[1], counts[1] = X[0], counts[0]  # a duplicate row
    est = ConditionalFlowMatchingDensity(**EXACT, dequantize=True, random_state=0)
    scores = est.fit(X, counts).score_samples(X, counts)
    # Its noise comes from the row [y, x]: float64 fixed steps, round-off only.
    assert scores[1] == pytest.approx(scores[0], rel=1e-12)
    reversed_scores = est.score_samples(X[::-1], counts[::-1])[::-1]
    assert_allclose(reversed_scores, scores, rtol=1e-10)
    assert_allclose(est.score_samples(X[7:8], counts[7:8]), scores[7:8], rtol=1e-10)
