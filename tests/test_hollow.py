"""The HollowNet field (architecture="hollow"): its one-pass divergence, and
the estimator around it."""

import numpy as np
import pytest
import torch
from _data import EXACT, TINY, blobs
from numpy.testing import assert_allclose
from scipy.linalg import expm
from scipy.stats import multivariate_normal
from sklearn.utils._param_validation import InvalidParameterError
from torch.testing import assert_close

import skflow
from skflow import FlowMatchingDensity, FlowMatchingOutlierDetector
from skflow._hollow import HollowVectorField, hollow_layer_sizes
from skflow._nets import VectorField


def _moved_off_init(field):
    """Every weight moved off its initial value (the coupling A(t) starts at
    zero), so that each term of the closed forms counts."""
    with torch.no_grad():
        for parameter in field.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return field


def _jacobians(field, t, x, context):
    return torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda r, i=i: field(
                    t if t.ndim == 0 else t[i], r[None], context[i : i + 1]
                )[0],
                row,
            )
            for i, row in enumerate(x)
        ]
    )


@pytest.mark.parametrize("activation", ["gelu", "silu"])
@pytest.mark.parametrize("d, widths", [(1, (6,)), (2, (5, 4)), (7, (6, 5, 4))])
@pytest.mark.parametrize("per_row_time", [False, True])
@pytest.mark.parametrize("envelope_radius", [None, 0.5])
def test_one_pass_divergence_matches_autograd(
    activation, d, widths, per_row_time, envelope_radius
):
    # The exact trace from the forward pass, and the Hutchinson estimate,
    # against autograd's Jacobian in float64: they agree to round-off, which
    # also checks that block i of the conditioner never sees x_i (the
    # closed form leaves that path out). A narrow envelope makes its
    # derivative's share of the trace large.
    torch.manual_seed(d)
    field = HollowVectorField(d, widths, activation=activation, n_context=3)
    field = _moved_off_init(field.double())
    if envelope_radius is not None:
        field.envelope_radius = envelope_radius
    x = 1.5 * torch.randn(6, d, dtype=torch.float64)
    context = torch.randn(6, 3, dtype=torch.float64)
    t = torch.rand(6 if per_row_time else (), dtype=torch.float64)
    velocity, divergence = field.velocity_and_divergence(t, x, context=context)
    assert_close(velocity, field(t, x, context))
    jacobians = _jacobians(field, t, x, context)
    assert_close(divergence, torch.einsum("nii->n", jacobians))
    probes = 2.0 * torch.randint(0, 2, (6, 3, d)).double() - 1
    _, estimate = field.velocity_and_divergence(t, x, probes, context=context)
    expected = torch.einsum("npi,nij,npj->n", probes, jacobians, probes) / 3
    assert_close(estimate, expected)


def test_far_from_the_data_the_field_is_its_linear_part():
    # The envelope hands the field to A(t) x beyond a few standard
    # deviations per feature, so that far rows' trajectories stay as tame
    # as a linear flow's. At 12 standard deviations per feature (r = 3) the
    # envelope is exp(-8) ~ 3e-4, and the units' output, O(|x|), is a few
    # tens: what is left of it is below 0.05.
    torch.manual_seed(0)
    d = 5
    field = _moved_off_init(HollowVectorField(d, (6, 5)).double())
    x = torch.randn(20, d, dtype=torch.float64)
    far = 12 * np.sqrt(d) * x / x.norm(dim=1, keepdim=True)
    A = field.linear[0] + 0.3 * field.linear[1]
    velocity, divergence = field.velocity_and_divergence(torch.tensor(0.3), far)
    assert_close(velocity, far @ A.T, rtol=0, atol=0.05)
    assert_close(divergence, torch.trace(A).expand(20), rtol=0, atol=0.05)
    # Near the data it is not.
    assert (field(0.3, x) - x @ A.T).abs().max() > 0.1


def test_config_rebuilds_the_architecture_and_the_mask_is_not_saved():
    torch.manual_seed(0)
    field = _moved_off_init(HollowVectorField(4, (6, 5), n_frequencies=2).double())
    assert "mask" not in field.state_dict()
    rebuilt = HollowVectorField.from_config(field.config()).double()
    rebuilt.load_state_dict(field.state_dict(), strict=True)
    x = torch.randn(5, 4, dtype=torch.float64)
    assert_close(rebuilt(0.4, x), field(0.4, x), rtol=0, atol=0)


@pytest.mark.parametrize("d", [2, 10, 30, 64])
def test_auto_widths_cost_about_one_mlp_pass(d):
    # "auto" matches the multiply-adds of one pass of the default MLP;
    # counted here from the tensors a pass multiplies, not from the formula
    # that chose k. Rounding k to an integer moves the cost by < 10%.
    k, k_tau = hollow_layer_sizes(d, (256,) * 4)
    field = HollowVectorField(d, (k, k_tau))
    mlp = VectorField(d, (256,) * 4, n_fourier_features=128)
    hollow_cost = (
        field.first_x.numel()
        + field.first_other.numel()
        + sum(w.numel() for w in field.blocks_w)
        + field.tau_h.numel()
        + field.tau_x.numel()
        + field.out_w.numel()
    )
    mlp_cost = sum(m.weight.numel() for m in mlp.mlp if hasattr(m, "weight"))
    assert hollow_cost == pytest.approx(mlp_cost, rel=0.1)


def test_linear_field_matches_its_closed_form_density():
    # With every unit switched off, v(t, z) = A z: the flow from t = 0 to 1
    # is z1 = exp(A) z0, so log p(z1) = log N(exp(-A) z1; 0, I) - tr(A).
    # The default solver's error on this smooth field is ~1e-6 nats.
    X = blobs(n=200, d=3)
    est = FlowMatchingDensity(**EXACT, architecture="hollow", random_state=0).fit(X)
    est.set_params(solver="dopri5-rowwise", n_steps=None)
    rng = np.random.RandomState(1)
    A = 0.4 * rng.normal(size=(3, 3))
    field = est.vector_field_
    with torch.no_grad():
        field.out_w.zero_()
        field.out_b.zero_()
        field.linear.zero_()
        field.linear[0] = torch.as_tensor(A)
    z1 = rng.normal(size=(50, 3))
    X_new = est.mean_ + est.scale_ * z1
    z0 = z1 @ expm(-A).T
    expected = (
        multivariate_normal(np.zeros(3)).logpdf(z0)
        - np.trace(A)
        - np.log(est.scale_).sum()
    )
    assert_allclose(est.score_samples(X_new), expected, atol=1e-4)


def test_hollow_density_integrates_to_one():
    # Any flow's density integrates to 1 up to solver error, trained or not:
    # a short fit on a 2-D blob, a Riemann sum over a 120 x 120 grid out to
    # 8 standard deviations of the data (the tails beyond hold < 1e-6 of the
    # model's mass). The 2% tolerance covers the grid and the solver.
    X = blobs(n=300, d=2)
    est = FlowMatchingDensity(
        architecture="hollow",
        hidden_layer_sizes=(16, 16),
        max_iter=300,
        n_iter_no_change=None,
        random_state=0,
    ).fit(X)
    low, high = X.mean(0) - 8 * X.std(0), X.mean(0) + 8 * X.std(0)
    gx, gy = np.linspace(low[0], high[0], 120), np.linspace(low[1], high[1], 120)
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    mass = np.exp(est.score_samples(grid)).sum() * (gx[1] - gx[0]) * (gy[1] - gy[0])
    assert mass == pytest.approx(1.0, abs=0.02)


def test_auto_widths_follow_the_architecture():
    X = blobs(n=100, d=5)
    mlp = FlowMatchingDensity(**{**TINY, "hidden_layer_sizes": "auto"}).fit(X)
    assert mlp.vector_field_.hidden_layer_sizes == (256, 256, 256, 256)
    hollow = FlowMatchingDensity(
        **{**TINY, "hidden_layer_sizes": "auto"}, architecture="hollow"
    ).fit(X)
    assert isinstance(hollow.vector_field_, HollowVectorField)
    assert hollow.vector_field_.hidden_layer_sizes == hollow_layer_sizes(5, (256,) * 4)


def test_unknown_architecture_raises():
    with pytest.raises(InvalidParameterError, match="architecture"):
        FlowMatchingDensity(architecture="resnet").fit(blobs())


def test_exact_scoring_pushes_one_direction_per_row():
    # The one-pass divergence lets a chunk hold d times more rows than the
    # MLP's d directions would: "auto" chunks of 2^20 / (8 x 16 units) =
    # 8,192 rows score 2,000 rows at once, where 8 directions would need
    # chunks of 1,024.
    X = blobs(n=100, d=8)
    est = FlowMatchingDensity(**EXACT, architecture="hollow").fit(X)
    assert est.vector_field_.divergence_directions == 1
    with skflow.solver_stats() as stats:
        est.score_samples(blobs(n=2000, d=8, seed=1))
    assert stats.n_chunks == 1


def test_detector_and_files_keep_the_hollow_field(tmp_path):
    X = blobs(n=200, d=4)
    detector = FlowMatchingOutlierDetector(
        **EXACT, architecture="hollow", contamination=0.1, random_state=0
    ).fit(X)
    skflow.save(detector, tmp_path / "model.skflow")
    loaded = skflow.load(tmp_path / "model.skflow")
    assert isinstance(loaded.vector_field_, HollowVectorField)
    assert loaded.get_params() == detector.get_params()
    assert_allclose(loaded.decision_function(X), detector.decision_function(X))
