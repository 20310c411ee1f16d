"""The flow-matching loop: its draws, its schedule and optimizer, and
failing or interrupted training (errors that name the fix, models kept)."""

import numpy as np
import pytest
import torch
from _data import TINY, blobs, record_training_argument
from numpy.testing import assert_array_equal

import skflow._training
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector
from skflow._early_stopping import check_beats_base_density
from skflow._nets import VectorField
from skflow._paths import make_path
from skflow._recipe import Recipe
from skflow._training import (
    TIME_SAMPLERS,
    _adam,
    _learning_rate_factor,
    _losses,
    _Minibatches,
)

MODEL = {**TINY, "max_iter": 60}
# Adam moves each weight by about the learning rate per step: at 1e8 the
# activations overflow float32 within two steps.
EXPLODING = {**MODEL, "learning_rate": 1e8}


def _draws(seed=0):
    """The uniform and normal draws a sampler is handed, in float64."""
    generator = torch.Generator().manual_seed(seed)
    return (
        lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64),
        lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64),
    )


@pytest.mark.parametrize("name", sorted(TIME_SAMPLERS))
def test_training_times_lie_in_the_unit_interval(name):
    times = TIME_SAMPLERS[name](*_draws(), 1000, 1.0)
    assert times.shape == (1000, 1)
    assert times.min() >= 0 and times.max() <= 1


def test_stratified_times_put_one_time_in_each_stratum():
    times = TIME_SAMPLERS["stratified"](*_draws(), 64, 0.0)  # no skew
    strata = torch.floor(times.squeeze(1) * 64).sort().values
    assert_array_equal(strata.numpy(), np.arange(64))


def test_power_times_favour_the_data_end_by_their_skew():
    # t = u^(1/2) has mean 2/3 and standard deviation 0.24: at 20,000 draws
    # the mean's standard error is 0.0017, and 0.01 is six of them.
    times = TIME_SAMPLERS["power"](*_draws(), 20_000, 1.0)
    assert times.mean().item() == pytest.approx(2 / 3, abs=0.01)
    unskewed = TIME_SAMPLERS["power"](*_draws(), 20_000, 0.0)
    assert unskewed.mean().item() == pytest.approx(1 / 2, abs=0.01)


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    factor = _learning_rate_factor(1000, warmup_fraction=0.05)
    assert [factor(step) for step in (0, 24, 49)] == pytest.approx([0.02, 0.5, 1.0])
    assert factor(50) == pytest.approx(1.0)
    assert factor(525) == pytest.approx(0.5)  # half way through the cosine
    decay = [factor(step) for step in range(50, 1000)]
    assert all(np.diff(decay) <= 0) and decay[-1] < 1e-4


def test_minibatches_draw_rows_in_proportion_to_their_weights():
    # On the "fm" path with sigma = 0, x1 = x_t + (1 - t) u_t: the drawn
    # rows can be read back from the minibatch.
    data = torch.arange(8, dtype=torch.float64).unsqueeze(1)
    weights = torch.tensor([1.0, 0, 3, 0, 1, 1, 0, 2], dtype=torch.float64)
    minibatches = _Minibatches(
        make_path("fm", 0.0),
        data,
        weights,
        batch_size=8000,
        generator=torch.Generator().manual_seed(0),
        dequantize=None,
        time_sampling="power",
        time_skew=1.0,
    )
    t, x_t, u_t = minibatches()
    rows = torch.round(x_t + (1 - t) * u_t).long().squeeze(1)
    counts = torch.bincount(rows, minlength=8).numpy()
    assert_array_equal(counts[[1, 3, 6]], 0)  # weight 0: never drawn
    # Binomial standard errors at n = 8000 are below 0.006; 0.02 is > 3 of them.
    np.testing.assert_allclose(counts / 8000, weights.numpy() / 8, atol=0.02)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_condition_noise_moves_the_conditions_alone_by_its_standard_deviation(noise):
    # Rows [y, x] with y = 5 and x = 2, 3: the drawn conditions are x plus
    # N(0, noise^2), and y's target velocity does not see the noise.
    data = torch.tensor([[5.0, 2.0, 3.0]], dtype=torch.float64).repeat(4, 1)
    minibatches = _Minibatches(
        make_path("fm", 0.0),
        data,
        torch.ones(4, dtype=torch.float64),
        batch_size=20_000,
        generator=torch.Generator().manual_seed(0),
        dequantize=None,
        time_sampling="power",
        time_skew=1.0,
        n_targets=1,
        condition_noise=noise,
    )
    t, x_t, u_t = minibatches()
    shift = x_t[:, 1:] - data[0, 1:]
    # Standard errors at n = 20,000: 0.3 / sqrt(n) = 0.002 for the mean,
    # 0.3 / sqrt(2 n) = 0.0015 for the standard deviation; 0.01 is > 5.
    np.testing.assert_allclose(shift.mean(0).numpy(), 0.0, atol=0.01)
    np.testing.assert_allclose(shift.std(0).numpy(), noise, atol=0.01)
    y1 = x_t[:, 0] + (1 - t[:, 0]) * u_t[:, 0]  # sigma = 0: x1 read back
    np.testing.assert_allclose(y1.numpy(), 5.0, atol=1e-9)


def test_condition_noise_follows_scotts_rate_in_the_conditions_dimension():
    recipe = Recipe(condition_noise_scale=0.5)
    # n^(-1 / (p + 4)): 10,000 rows of 1 condition give 10^(-4/5).
    assert recipe.condition_noise(10_000, 1) == pytest.approx(0.5 * 10**-0.8)
    assert recipe.condition_noise(10**4, 6) == pytest.approx(0.5 * 10**-0.4)
    assert Recipe(condition_noise_scale=0.0).condition_noise(100, 3) == 0.0


def _autograd_divergence(field, t, x, n_moving):
    z = x.clone().requires_grad_(True)
    velocity = field(t, z)
    return sum(
        torch.autograd.grad(velocity[:, j].sum(), z, create_graph=True)[0][:, j]
        for j in range(n_moving)
    )


@pytest.mark.parametrize("n_targets", [None, 1])
def test_divergence_matching_adds_its_weighted_term_on_its_rows(n_targets):
    # The loss reported is flow matching's over the whole minibatch; the
    # objective adds weight * mean(residual^2) / (moving coordinates) over
    # the first ``divergence_rows`` rows, with the velocity detached inside
    # the residual: the term's gradient moves the weights through the
    # divergence alone. A density (closed-form divergence) and a
    # conditional field whose first column moves (one backward per column).
    torch.manual_seed(0)
    path = make_path("fm", 0.05)
    field = VectorField(2, (16, 16), n_fourier_features=8).double()
    data = torch.randn(50, 2, dtype=torch.float64)
    minibatches = _Minibatches(
        path,
        data,
        torch.ones(50, dtype=torch.float64),
        batch_size=12,
        generator=torch.Generator().manual_seed(0),
        dequantize=None,
        time_sampling="power",
        time_skew=1.0,
        n_targets=n_targets,
    )
    t, x_t, u_t = minibatches()
    k = u_t.shape[1]
    loss, objective = _losses(field, path, t, x_t, u_t, 0.3, 5)
    plain, same = _losses(field, path, t, x_t, u_t, 0.0, 5)
    assert plain is same
    torch.testing.assert_close(loss, plain)
    divergence = _autograd_divergence(field, t[:5], x_t[:5], k)
    velocity = field(t[:5], x_t[:5])[:, :k].detach()
    residual = path.divergence_residual(
        t[:5], x_t[:5, :k], u_t[:5], velocity, divergence
    )
    term = 0.3 * residual.square().mean() / k
    torch.testing.assert_close(objective, loss + term)
    parameters = list(field.parameters())[:-1]  # the last bias has no slope
    torch.testing.assert_close(
        torch.autograd.grad(objective - loss, parameters),
        torch.autograd.grad(term, parameters),
    )


def test_divergence_matching_is_paid_where_it_was_measured(monkeypatch):
    # The default recipe weights the term for densities of 2 features and
    # conditional targets of 2 on Lipman's path: not for a density in 1-D
    # or 3-D, not on another path, not for 1 or 3 targets.
    from skflow import ConditionalFlowMatchingDensity

    seen = record_training_argument(monkeypatch, "divergence_weight")
    weight = Recipe().divergence_matching_weight
    assert weight > 0
    FlowMatchingDensity(**TINY, random_state=0).fit(blobs(60, d=1))
    FlowMatchingDensity(**TINY, random_state=0).fit(blobs(60, d=2))
    FlowMatchingDensity(**TINY, random_state=0).fit(blobs(60, d=3))
    FlowMatchingDensity(**TINY, path="icfm", random_state=0).fit(blobs(60, d=2))
    X = blobs(60, d=4)
    for n_targets in (1, 2, 3):
        ConditionalFlowMatchingDensity(**TINY, random_state=0).fit(
            X[:, n_targets:], X[:, :n_targets]
        )
    # A small conditional fit trains 1 + _refit_members times: early
    # stopping, then the refits on every row, with the same weight.
    trainings = 1 + ConditionalFlowMatchingDensity._refit_members
    densities = [0.0, weight, 0.0, 0.0]
    conditionals = [0.0] * trainings + [weight] * trainings + [0.0] * trainings
    assert seen == densities + conditionals


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


def test_diverging_training_raises_an_error_naming_the_fixes():
    with pytest.raises(FloatingPointError, match="diverged") as error:
        FlowMatchingDensity(**EXPLODING, random_state=0).fit(blobs(100))
    message = str(error.value)
    assert "learning_rate (now 1e+08)" in message
    assert "dtype='float64'" in message


def test_a_fit_that_diverges_without_overflowing_is_refused():
    # In float64 nothing overflows at a learning rate of 1e12 on data of
    # scale 1e6: every loss is finite, but the field is useless (0.3.2
    # returned it silently). Its loss is far above the zero field's.
    X = blobs(200) * 1e6
    est = FlowMatchingDensity(**MODEL, random_state=0).fit(X)
    scores = est.score_samples(X)
    est.set_params(learning_rate=1e12, max_iter=200, dtype="float64")
    with pytest.raises(FloatingPointError, match="far above the zero field's"):
        est.fit(X)
    assert_array_equal(est.score_samples(X), scores)  # the previous model


@pytest.mark.parametrize("configuration", ["5 steps", "60 steps", "float64 rk4"])
def test_short_fits_of_test_configurations_pass_the_divergence_checks(configuration):
    # An untrained network sits just above the zero field's loss, a trained
    # one below; held-out scores of Gaussian data, where the base density
    # is nearly the truth, sit just below the base's (measured in
    # benchmarks/results/divergence_checks.md).
    params = {
        "5 steps": {**TINY, "max_iter": 5},
        "60 steps": MODEL,
        "float64 rk4": {**MODEL, "dtype": "float64", "solver": "rk4", "n_steps": 4},
    }[configuration]
    for seed in range(3):
        est = FlowMatchingDensity(**params, validation_fraction=0.3, random_state=seed)
        est.fit(np.random.RandomState(seed).normal(size=(60, 3)))


def test_a_held_out_score_far_below_the_base_densitys_is_refused():
    class Scores:  # a held-out score whose base density scores -4 per row
        n_targets = 2

        def base_score(self):
            return -4.0

    diverged = skflow._training.diverged_message
    # The margin is 5 + d = 7 nats: -10.9 passes, -11.1 does not.
    check_beats_base_density([-30.0, -10.9], Scores(), lambda w: diverged(w, 0.1))
    with pytest.raises(FloatingPointError, match="far below the base density's"):
        check_beats_base_density([-30.0, -11.1], Scores(), lambda w: diverged(w, 0.1))
    check_beats_base_density([], Scores(), lambda w: diverged(w, 0.1))  # no checks


def test_a_failed_refit_keeps_the_previous_model():
    X = blobs(100)
    est = FlowMatchingDensity(**MODEL, random_state=0).fit(X)
    scores = est.score_samples(X)
    before = dict(vars(est))
    # A refit on other data (3 columns) that diverges.
    est.set_params(learning_rate=1e8)
    with pytest.raises(FloatingPointError):
        est.fit(blobs(100, d=3))
    assert est.n_features_in_ == 2
    assert set(vars(est)) == set(before)
    assert est.vector_field_ is before["vector_field_"]
    assert_array_equal(est.score_samples(X), scores)


def _interrupt_at(monkeypatch, step):
    """Make the learning-rate schedule raise KeyboardInterrupt at ``step``."""
    schedule = skflow._training._learning_rate_factor

    def interrupting(max_iter, warmup_fraction):
        factor = schedule(max_iter, warmup_fraction)

        def interrupted(current):
            if current == step:
                raise KeyboardInterrupt
            return factor(current)

        return interrupted

    monkeypatch.setattr(skflow._training, "_learning_rate_factor", interrupting)


def test_keyboard_interrupt_keeps_the_model_trained_so_far(monkeypatch):
    X = blobs(100)
    _interrupt_at(monkeypatch, step=20)
    with pytest.warns(UserWarning, match="interrupted after 19 of 60 steps"):
        est = FlowMatchingDensity(**MODEL, random_state=0).fit(X)
    assert est.n_iter_ == len(est.loss_curve_) == 19
    assert np.all(np.isfinite(est.score_samples(X)))
    assert est.sample(5, random_state=0).shape == (5, 2)


def test_keyboard_interrupt_before_the_first_step_propagates(monkeypatch):
    X = blobs(100)
    est = FlowMatchingDensity(**MODEL, random_state=0).fit(X)
    scores = est.score_samples(X)
    _interrupt_at(monkeypatch, step=1)  # inside the first step
    with pytest.raises(KeyboardInterrupt):
        est.fit(blobs(100, d=3))
    assert est.n_features_in_ == 2
    assert_array_equal(est.score_samples(X), scores)


def test_detector_interrupted_while_setting_its_threshold_keeps_its_old_fit(
    monkeypatch,
):
    X = blobs(100)
    detector = FlowMatchingOutlierDetector(**MODEL, random_state=0).fit(X)
    offset, field = detector.offset_, detector.vector_field_

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FlowMatchingOutlierDetector, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        detector.fit(blobs(100, seed=1))
    assert detector.offset_ == offset
    assert detector.vector_field_ is field
