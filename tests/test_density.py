"""End-to-end tests of FlowMatchingDensity."""

import copy
import dataclasses
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
import torch
from _data import EXACT, SMALL, SMALL_EXACT, TINY, blobs
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from toy_densities import GaussianMixture2D

import skflow
from skflow import FlowMatchingDensity
from skflow._ode import MAX_EVALUATIONS, log_likelihood

# SMALL: no held-out split, so every step is taken and every row trains (the
# split and early stopping are tested in test_early_stopping.py); SMALL_EXACT
# where results must be compared tightly (each row integrated on its own).


@pytest.fixture(scope="module")
def blob_fit():
    X = blobs(n=300)
    return X, FlowMatchingDensity(**SMALL, random_state=0).fit(X)


@pytest.fixture(scope="module")
def mixture_fit(request):
    """One model fitted on the 2-D mixture, shared by the statistical tests."""
    device = request.config.getoption("--device")
    mixture = GaussianMixture2D()
    X = mixture.sample(2000, seed=0)
    est = FlowMatchingDensity(
        hidden_layer_sizes=(64, 64, 64),
        max_iter=3000,
        batch_size=256,
        device=device,
        random_state=0,
    ).fit(X)
    return mixture, X, est


@pytest.mark.slow
def test_density_integrates_to_one(mixture_fit):
    # A normalizing flow's density integrates to 1 up to solver error; the
    # Riemann sum over a 150 x 150 grid reaching 3 units past the data is
    # accurate to far better than the 2% tolerance (the tails beyond hold
    # ~1e-6 of the mass of this model).
    _, X, est = mixture_fit
    low, high = X.min(0) - 3, X.max(0) + 3
    gx, gy = np.linspace(low[0], high[0], 150), np.linspace(low[1], high[1], 150)
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    cell_area = (gx[1] - gx[0]) * (gy[1] - gy[0])
    mass = np.exp(est.score_samples(grid)).sum() * cell_area
    assert mass == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow
def test_kl_to_true_mixture_is_small(mixture_fit):
    # KL(p || q) estimated on 2,000 fresh points from p (standard error ~0.01).
    # The best single Gaussian has KL 1.17 nats here and this small model
    # (3 x 64, 3,000 steps) measured 0.07; 0.15 asserts the flow resolved
    # all three modes and their shapes, with room for seed-to-seed spread.
    mixture, _, est = mixture_fit
    X_test = mixture.sample(2000, seed=1)
    kl = np.mean(mixture.log_density(X_test) - est.score_samples(X_test))
    assert 0 < kl + 0.03  # an estimate far below 0 would mean a bug
    assert kl < 0.15


@pytest.mark.slow
def test_samples_follow_the_mixture(mixture_fit):
    # The mean and the share of samples nearest each mode match the truth.
    mixture, _, est = mixture_fit
    samples = est.sample(4000, random_state=0)
    assert samples.shape == (4000, 2)
    assert samples.dtype == np.float64
    nearest = np.argmin(
        ((samples[:, None, :] - mixture.means[None]) ** 2).sum(-1), axis=1
    )
    shares = np.bincount(nearest, minlength=3) / len(samples)
    # Binomial standard error at n = 4000 is <0.008; the modes' overlap is tiny.
    assert_allclose(shares, mixture.weights, atol=0.04)


def test_vector_field_contract_reproduces_scores(blob_fit):
    # vector_field_(t, z) on standardized z, plus path_.log_base_density and
    # the standardization's Jacobian, is everything score_samples uses.
    X, est = blob_fit
    X_new = X[:20]
    z = torch.as_tensor((X_new - est.mean_) / est.scale_, dtype=torch.float32)
    assert est.vector_field_(torch.tensor(0.5), z).shape == z.shape
    log_z, _ = log_likelihood(
        est.vector_field_,
        z,
        est.path_.log_base_density,
        solver=est.solver,
        rtol=est.rtol,
        atol=est.atol,
    )
    expected = log_z.double().numpy() - np.log(est.scale_).sum()
    assert_allclose(est.score_samples(X_new), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "params, magnitude",
    [(SMALL_EXACT, 1e3), (SMALL, 1e3), (SMALL_EXACT, 1e30), (SMALL_EXACT, 1e-30)],
    ids=["rk4-float64", "dopri5", "rk4-float64-huge", "rk4-float64-tiny"],
)
def test_scores_and_samples_are_in_the_callers_units(params, magnitude, device):
    # Fitting on magnitude * X standardizes to the same z, so every log
    # density moves by exactly -d log(magnitude), the standardization's
    # Jacobian, and every sample is magnitude times the unscaled one.
    X = blobs(d=3)
    est = FlowMatchingDensity(**params, device=device, random_state=0)
    unscaled = clone(est).fit(X)
    scaled = clone(est).fit(magnitude * X)
    # z agrees to ~1e-16, so the fits agree to round-off (measured: 1e-14 in
    # both precisions); float32 could in principle round one z differently.
    tolerance = 1e-10 if params.get("dtype") == "float64" else 1e-6
    expected = unscaled.score_samples(X) - 3 * np.log(magnitude)
    assert_allclose(
        scaled.score_samples(magnitude * X), expected, atol=tolerance, rtol=0
    )
    # Samples are z * scale_ + mean_: round-off relative to the data's size.
    samples = scaled.sample(20, random_state=0) / magnitude
    assert_allclose(
        samples,
        unscaled.sample(20, random_state=0),
        atol=tolerance * np.abs(X).max(),
        rtol=0,
    )


def test_constant_columns_work(device):
    X = blobs(d=2)
    X = np.column_stack([X[:, 0], np.full(len(X), 7.5), X[:, 1]])
    with pytest.warns(UserWarning, match=r"Feature\(s\) \[1\] are constant"):
        est = FlowMatchingDensity(**SMALL, device=device, random_state=0).fit(X)
    assert_array_equal(est.scale_[1], 1.0)
    scores = est.score_samples(X)
    assert np.all(np.isfinite(scores))
    # Off the constant value the density is lower.
    moved = X.copy()
    moved[:, 1] += 3.0
    assert np.all(est.score_samples(moved) < scores)
    assert np.all(np.isfinite(est.sample(50, random_state=0)))


def test_same_seed_gives_bitwise_identical_scores_and_samples(device):
    if device != "cpu":
        pytest.skip("bitwise reproducibility is promised on the CPU")
    X = blobs()
    first = FlowMatchingDensity(**SMALL, random_state=3).fit(X)
    second = FlowMatchingDensity(**SMALL, random_state=3).fit(X)
    assert_array_equal(first.score_samples(X), second.score_samples(X))
    assert_array_equal(
        first.sample(10, random_state=1), second.sample(10, random_state=1)
    )
    assert_array_equal(first.loss_curve_, second.loss_curve_)
    other = FlowMatchingDensity(**SMALL, random_state=4).fit(X)
    assert not np.array_equal(first.score_samples(X), other.score_samples(X))


def test_sample_shape_dtype_and_seed(device):
    X = blobs(d=3)
    est = FlowMatchingDensity(**SMALL, device=device, random_state=0).fit(X)
    samples = est.sample(7, random_state=0)
    assert samples.shape == (7, 3)
    assert samples.dtype == np.float64
    assert_array_equal(samples, est.sample(7, random_state=0))
    assert not np.array_equal(samples, est.sample(7, random_state=1))
    assert est.sample().shape == (1, 3)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_samples"):
            est.sample(bad)


def test_fitted_attributes(device):
    X = blobs(d=3)
    est = FlowMatchingDensity(**SMALL, device=device, random_state=0).fit(X)
    assert est.n_features_in_ == 3
    assert est.n_iter_ == SMALL["max_iter"] == len(est.loss_curve_)
    assert isinstance(est.device_, torch.device)
    assert est.device == device  # the parameter is never rewritten
    assert isinstance(est.vector_field_, torch.nn.Module)
    assert not est.vector_field_.training
    assert_allclose(est.mean_, X.mean(0))
    assert_allclose(est.scale_, X.std(0))
    # Training reduces the flow-matching loss.
    assert np.mean(est.loss_curve_[-10:]) < np.mean(est.loss_curve_[:10])


def test_score_is_the_mean_log_likelihood():
    X = blobs()
    est = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(X)
    assert est.score(X) == pytest.approx(np.mean(est.score_samples(X)), rel=1e-12)


def test_hutchinson_is_reproducible_and_unbiased():
    X = blobs(d=3)
    exact = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(X)
    hutchinson = clone(exact).set_params(divergence="hutchinson", n_probes=4).fit(X)
    scores = hutchinson.score_samples(X)
    assert_array_equal(scores, hutchinson.score_samples(X))  # probes are seeded
    error = scores - exact.score_samples(X)
    assert np.std(error) > 0  # it is an estimate...
    # ...whose mean error over 200 rows is within 4 standard errors of 0.
    assert abs(error.mean()) < 4 * error.std() / np.sqrt(len(error))


def test_float32_and_float64_agree():
    X = blobs()
    est64 = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(X)
    est32 = clone(est64).set_params(dtype="float32").fit(X)
    # One seed draws the same minibatches and noise in both precisions, so
    # only float32 round-off separates them: measured 2e-6 nats after 100
    # Adam steps and the solve.
    assert_allclose(est32.score_samples(X), est64.score_samples(X), atol=1e-4)


def test_sample_weight_zero_equals_removing_rows():
    X = blobs(n=60)
    weights = np.ones(len(X))
    weights[::3] = 0
    weighted = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(
        X, sample_weight=weights
    )
    removed = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(X[weights > 0])
    # Rows are drawn by inverting the weights' CDF, so both fits see the same
    # minibatches; only the last bits of the weighted mean differ.
    assert_allclose(weighted.score_samples(X), removed.score_samples(X), rtol=1e-9)


def test_integer_sample_weight_equals_repeating_rows():
    X = blobs(n=40)
    weights = np.random.RandomState(0).randint(1, 4, size=len(X))
    weighted = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(
        X, sample_weight=weights
    )
    repeated = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(
        np.repeat(X, weights, 0)
    )
    assert_allclose(weighted.score_samples(X), repeated.score_samples(X), rtol=1e-9)


def test_unfitted_estimator_raises_not_fitted():
    est = FlowMatchingDensity()
    for call in (
        lambda: est.score_samples(np.zeros((2, 2))),
        lambda: est.score(np.zeros((2, 2))),
        lambda: est.sample(3),
    ):
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"path": "straight"}, "'path' parameter"),
        ({"sigma": -0.1}, "'sigma' parameter"),
        ({"solver": "leapfrog"}, "'solver' parameter"),
        ({"dtype": "float16"}, "'dtype' parameter"),
        ({"max_iter": 0}, "'max_iter' parameter"),
    ],
)
def test_invalid_parameters_raise(params, message):
    with pytest.raises(InvalidParameterError, match=message):
        FlowMatchingDensity(**params).fit(blobs())


@pytest.mark.parametrize("sizes", [(), (16, 0), (16, 2.5)])
def test_invalid_hidden_layer_sizes_raise(sizes):
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        FlowMatchingDensity(hidden_layer_sizes=sizes).fit(blobs())


def test_fixed_step_solver_without_n_steps_raises_in_fit():
    with pytest.raises(ValueError, match="n_steps"):
        FlowMatchingDensity(**SMALL, solver="rk4").fit(blobs())


def test_grid_search_over_path_and_sigma():
    X = blobs(n=120)
    search = GridSearchCV(
        FlowMatchingDensity(
            hidden_layer_sizes=(16,), max_iter=30, batch_size=32, random_state=0
        ),
        {"path": ["fm", "icfm", "ot-cfm", "vp"], "sigma": [0.0, 0.1]},
        cv=2,
    ).fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert scores.shape == (8,)
    assert np.all(np.isfinite(scores))
    assert search.best_params_["path"] in {"fm", "icfm", "ot-cfm", "vp"}
    assert search.best_estimator_.n_features_in_ == 2


def test_pipeline_and_cross_val_score():
    X = blobs(n=120)
    pipe = make_pipeline(StandardScaler(), FlowMatchingDensity(**SMALL, random_state=0))
    scores = cross_val_score(pipe, X, cv=3)
    assert scores.shape == (3,)
    assert np.all(np.isfinite(scores))
    # A scaler inside the pipeline changes the units of the score: the
    # scores are log densities of the scaled data (see the docs' pitfalls).
    pipe.fit(X)
    est = pipe[-1]
    assert_allclose(est.scale_, 1.0, atol=1e-12)


def test_clone_keeps_parameters_and_drops_the_fit():
    est = FlowMatchingDensity(**SMALL, path="vp", sigma=0.2, random_state=0).fit(
        blobs()
    )
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "vector_field_")


@pytest.mark.parametrize("dump_load", ["joblib", "pickle"])
def test_round_trip_gives_identical_scores(dump_load, tmp_path):
    X = blobs()
    est = FlowMatchingDensity(**SMALL, random_state=0).fit(X)
    if dump_load == "joblib":
        joblib.dump(est, tmp_path / "model.joblib")
        loaded = joblib.load(tmp_path / "model.joblib")
    else:
        loaded = pickle.loads(pickle.dumps(est))
    assert_array_equal(loaded.score_samples(X), est.score_samples(X))
    assert_array_equal(loaded.sample(5, random_state=0), est.sample(5, random_state=0))


def test_model_from_a_missing_gpu_loads_on_the_cpu(monkeypatch):
    # Simulate a model fitted on a GPU, unpickled on a machine without one.
    X = blobs()
    est = FlowMatchingDensity(**SMALL, random_state=0).fit(X)
    expected = est.score_samples(X)
    est.device_ = torch.device("cuda:0")
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="cuda:0, which is not available"):
        loaded = pickle.loads(blob)
    assert loaded.device_ == torch.device("cpu")
    assert next(loaded.vector_field_.parameters()).device.type == "cpu"
    assert_array_equal(loaded.score_samples(X), expected)


def test_pickled_state_holds_the_field_on_the_cpu():
    est = FlowMatchingDensity(**SMALL, random_state=0).fit(blobs())
    state = est.__getstate__()
    assert all(p.device.type == "cpu" for p in state["vector_field_"].parameters())
    # The live estimator keeps its own field object.
    assert state["vector_field_"] is not est.vector_field_


def test_feature_names_are_recorded():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(blobs(), columns=["a", "b"])
    est = FlowMatchingDensity(**SMALL, random_state=0).fit(X)
    assert_array_equal(est.feature_names_in_, ["a", "b"])
    assert est.score_samples(X).shape == (len(X),)


def test_verbose_1_shows_progress_bars_on_standard_error(capsys):
    X = blobs()
    est = FlowMatchingDensity(**SMALL, random_state=0, verbose=1).fit(X)
    out, err = capsys.readouterr()
    assert out == ""
    assert "fit: 100%" in err and "100/100" in err and "loss=" in err
    est.set_params(inference_batch_size=50).score_samples(X)
    assert "score_samples: 100%" in capsys.readouterr().err  # 4 chunks
    est.sample(120, random_state=0)
    assert "sample: 100%" in capsys.readouterr().err  # 3 chunks
    est.set_params(inference_batch_size="auto").score_samples(X)
    assert capsys.readouterr().err == ""  # one chunk: no bar


def test_verbose_2_prints_ten_lines(capsys):
    FlowMatchingDensity(**SMALL, random_state=0, verbose=2).fit(blobs())
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10
    assert "step 100/100" in lines[-1] and "loss" in lines[-1]


def test_verbose_0_is_silent(capsys):
    est = FlowMatchingDensity(**SMALL, random_state=0, inference_batch_size=50)
    est.fit(blobs()).score_samples(blobs())
    est.sample(120, random_state=0)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("scale", [2.0**-995, 2.0**-365, 2.0**120, 2.0**1000])
def test_only_the_ratios_of_sample_weights_matter_however_extreme(scale):
    # Powers of two scale exactly: the weights, once scaled to a largest
    # weight of 1, are the same bits, so the fits are the same. 0.3.2 cast
    # them to float32 first, where 2^-365 (about exp(-253)) is 0 and 2^120
    # overflows: every minibatch then drew the last row, silently.
    X = blobs(n=60)
    weights = 2.0 ** -np.random.RandomState(0).randint(0, 4, len(X))
    reference = FlowMatchingDensity(**EXACT, random_state=0)
    reference.fit(X, sample_weight=weights)
    est = FlowMatchingDensity(**EXACT, random_state=0)
    est.fit(X, sample_weight=weights * scale)
    assert_array_equal(est.loss_curve_, reference.loss_curve_)
    assert_array_equal(est.score_samples(X), reference.score_samples(X))


def test_chunked_scoring_and_sampling_match_one_chunk():
    # With a fixed-step solver each row is integrated on its own, so chunks
    # change nothing but round-off in the matrix products.
    X = blobs(n=50, d=3)
    est = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(X)
    whole = est.score_samples(X)
    samples = est.sample(30, random_state=0)
    est.set_params(inference_batch_size=7)
    with skflow.solver_stats() as scoring:
        assert_allclose(est.score_samples(X), whole, rtol=1e-12)
    assert scoring.n_chunks == 8  # ceil(50 / 7)
    with skflow.solver_stats() as sampling:
        assert_allclose(est.sample(30, random_state=0), samples, rtol=1e-12)
    assert sampling.n_chunks == 5


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 1e-4)])
def test_default_solver_scores_each_row_on_its_own(dtype, tolerance):
    # The rowwise solver takes each row's steps and panels from that row
    # alone. In float64 only the matrix products' round-off differs between
    # batches of other shapes; in float32 that round-off (1e-7 relative) can
    # move a step or flip a panel's split, which changes a score by at most
    # the solver's own error (1e-5 to 1e-4 nats at the default tolerance).
    X = blobs(n=40, d=3)
    est = FlowMatchingDensity(**SMALL, dtype=dtype, random_state=0).fit(X)
    whole = est.score_samples(X)
    order = np.random.RandomState(0).permutation(len(X))
    assert_allclose(est.score_samples(X[order]), whole[order], atol=tolerance, rtol=0)
    assert_allclose(est.score_samples(X[:3]), whole[:3], atol=tolerance, rtol=0)
    est.set_params(inference_batch_size=7)
    assert_allclose(est.score_samples(X), whole, atol=tolerance, rtol=0)


def test_hutchinson_probes_depend_on_the_row_alone():
    X = blobs(n=50, d=3)
    X[1] = X[0]  # a duplicate draws the same probes
    est = FlowMatchingDensity(
        **SMALL_EXACT, divergence="hutchinson", n_probes=2, random_state=0
    ).fit(X)
    whole = est.score_samples(X)
    assert whole[1] == pytest.approx(whole[0], rel=1e-12)
    order = np.random.RandomState(0).permutation(len(X))
    assert_allclose(est.score_samples(X[order]), whole[order], rtol=1e-10)
    assert_allclose(est.score_samples(X[4:5]), whole[4:5], rtol=1e-10)
    est.set_params(inference_batch_size=9)
    assert_allclose(est.score_samples(X), whole, rtol=1e-12)
    # The probes are random: another fit's seed gives other estimates.
    other = FlowMatchingDensity(
        **SMALL_EXACT, divergence="hutchinson", n_probes=2, random_state=0
    ).fit(X)
    other._probe_seed += 1
    assert not np.allclose(other.score_samples(X), whole, rtol=1e-6)


def test_solver_stats_count_field_evaluations():
    X = blobs(n=20)
    est = FlowMatchingDensity(**SMALL_EXACT, random_state=0).fit(X)
    with skflow.solver_stats() as stats:
        est.score_samples(X)
    # rk4 evaluates the field 4 times per step.
    n = 4 * SMALL_EXACT["n_steps"]
    assert dataclasses.asdict(stats) == {
        "n_evaluations": n,
        "n_divergence_evaluations": n,
        "max_evaluations_per_chunk": n,
        "n_chunks": 1,
        "n_rows": len(X),
        "n_row_evaluations": n * len(X),
        "n_row_divergence_evaluations": n * len(X),
    }
    assert stats.evaluations_per_row == n
    adaptive = clone(est).set_params(solver="dopri5").fit(X)
    with skflow.solver_stats() as stats:
        adaptive.sample(10, random_state=0)
    # dopri5: 2 evaluations to pick the first step, then 6 per step (FSAL).
    assert stats.n_evaluations >= 8
    assert stats.n_divergence_evaluations == 0
    with skflow.solver_stats() as stats:
        adaptive.score_samples(X)
    # The divergence quadrature: 15 nodes on each of at least two panels.
    assert stats.n_divergence_evaluations % 15 == 0
    assert stats.n_divergence_evaluations >= 30
    assert stats.n_evaluations > stats.n_divergence_evaluations


def test_scoring_and_sampling_change_nothing_on_the_estimator():
    # Pure calls: the attributes before and after are the same objects
    # with the same values, and no new one appears.
    est = FlowMatchingDensity(**TINY, random_state=0).fit(blobs())
    before = {name: copy.deepcopy(value) for name, value in vars(est).items()}
    est.score_samples(blobs(seed=1))
    est.score(blobs(seed=1))
    est.sample(5, random_state=0)
    assert vars(est).keys() == before.keys()
    for name, value in before.items():
        if isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict().items():
                assert torch.equal(tensor, vars(est)[name].state_dict()[key])
        elif isinstance(value, np.ndarray | list | int | float):
            assert_array_equal(vars(est)[name], value)
        else:  # a path, a device
            assert repr(vars(est)[name]) == repr(value)


@pytest.mark.slow
@pytest.mark.parametrize("distance", [1e3, 1e30])
def test_far_away_points_get_finite_very_negative_scores(blob_fit, distance):
    # Far out in 8 directions, scored with 20 normal rows: finite, far below
    # every normal row, within the solver's budget, and the normal rows keep
    # their scores to the solver's tolerance. At 1e3 nothing warns; at 1e30
    # the far rows' solves may overflow float32 and fall back to fixed steps
    # (with a warning), and must still be finite.
    X, est = blob_fit
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    directions = np.column_stack([np.cos(angles), np.sin(angles)])
    far = X.mean(0) + distance * X.std(0) * directions
    near = X[:20]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with skflow.solver_stats() as stats:
            scores = est.score_samples(np.vstack([near, far]))
    assert not caught or distance > 1e3
    assert np.all(np.isfinite(scores))
    assert scores[20:].max() < scores[:20].min() - 1e4
    assert stats.max_evaluations_per_chunk <= MAX_EVALUATIONS
    # Both calls are near the engine's accuracy target, 1e-3 nats, of the
    # truth (measured against float64 at 1e-10: 1.1e-3 alone, 2.1e-3 with
    # the far rows at 1e3, which share dopri5's steps, on this rough
    # 100-step GELU model), so they agree to 5e-3: far rows that wrecked
    # the steps would move the normal rows by far more.
    assert_allclose(scores[:20], est.score_samples(near), atol=5e-3, rtol=0)


def test_rows_that_overflow_are_isolated_and_reported_as_minus_inf(blob_fit):
    # 3e38 overflows float32 inside the field: the adaptive solve of its
    # chunk fails, the row is isolated by halving the chunk, and the other
    # rows keep adaptive scores.
    X, est = blob_fit
    near = X[:20]
    rows = np.vstack([near[:10], [[3e38, 3e38]], near[10:]])
    with pytest.warns(RuntimeWarning) as record:
        scores = est.score_samples(rows)
    messages = " ".join(str(warning.message) for warning in record)
    assert "gave up on 1 row(s)" in messages
    assert "1 row(s) have a log density beyond the range" in messages
    assert scores[10] == -np.inf
    others = np.delete(scores, 10)
    assert_allclose(others, est.score_samples(near), atol=1e-3, rtol=0)


def test_concurrent_scoring_from_threads_matches_serial_calls(blob_fit):
    X, est = blob_fit
    est = clone(est).set_params(divergence="hutchinson").fit(X)
    batches = [blobs(n=100, seed=seed) for seed in range(8)]
    serial = [est.score_samples(batch) for batch in batches]
    samples = est.sample(50, random_state=3)
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(est.score_samples, batches))
        threaded_samples = list(pool.map(lambda seed: est.sample(50, seed), [3] * 4))
    for expected, got in zip(serial, threaded, strict=True):
        assert_array_equal(got, expected)
    for got in threaded_samples:
        assert_array_equal(got, samples)
