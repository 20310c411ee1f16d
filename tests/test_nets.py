import pytest
import torch
from torch.testing import assert_close

from skflow._nets import ConditionalVectorField, TimeFeatures, VectorField


def test_vector_field_shapes_and_time_conventions():
    torch.manual_seed(0)
    field = VectorField(3, (16, 16)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    scalar = field(torch.tensor(0.3, dtype=torch.float64), x)
    assert scalar.shape == (5, 3)
    # A scalar time equals the same time given per row, as (n,) or (n, 1).
    per_row = torch.full((5,), 0.3, dtype=torch.float64)
    assert_close(field(per_row, x), scalar)
    assert_close(field(per_row[:, None], x), scalar)
    # A plain float works too.
    assert_close(field(0.3, x), scalar)


def test_vector_field_depends_on_time():
    torch.manual_seed(0)
    field = VectorField(2, (16,)).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    assert not torch.allclose(field(0.0, x), field(1.0, x))


def test_time_features_tell_both_ends_apart():
    features = TimeFeatures(4).double()
    t = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    out = features(t)
    assert out.shape == (2, features.n_outputs) == (2, 9)
    # Even without the raw t, the sin/cos part differs between t = 0 and 1.
    assert not torch.allclose(out[0, 1:], out[1, 1:])


def _jacobians(field, t, x):
    return torch.stack(
        [
            torch.autograd.functional.jacobian(lambda r: field(t, r[None])[0], row)
            for row in x
        ]
    )


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_closed_form_divergence_matches_autograd(activation):
    torch.manual_seed(0)
    field = VectorField(5, (32, 24, 16), activation=activation).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    velocity, divergence = field.velocity_and_divergence(t, x)
    assert_close(velocity, field(t, x))
    jacobians = _jacobians(field, t, x)
    assert_close(divergence, torch.einsum("nii->n", jacobians))


def _assert_divergence_with_graph_is_autograds(field, t, state, n_moving):
    """The closed form's velocity, divergence over the first ``n_moving``
    columns and weight gradients equal autograd's (one backward per
    column, with a graph)."""
    velocity, divergence = field.velocity_and_divergence_with_graph(t, state)
    z = state.clone().requires_grad_(True)
    reference = field(t, z)
    reference_divergence = sum(
        torch.autograd.grad(reference[:, j].sum(), z, create_graph=True)[0][:, j]
        for j in range(n_moving)
    )
    assert_close(velocity, reference)
    assert_close(divergence, reference_divergence)
    weights = list(field.parameters())[:-1]  # the last bias has no slope
    assert_close(
        torch.autograd.grad(divergence.square().sum(), weights),
        torch.autograd.grad(reference_divergence.square().sum(), weights),
    )


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_divergence_with_graph_matches_autograd_and_its_weight_gradient(activation):
    # Training differentiates the divergence in the weights: the closed
    # form's value and its gradient must be autograd's, for one time per
    # row as training draws them.
    torch.manual_seed(0)
    field = VectorField(3, (32, 24), n_fourier_features=16, activation=activation)
    x = 3 * torch.randn(9, 3, dtype=torch.float64)
    t = torch.rand(9, 1, dtype=torch.float64)
    _assert_divergence_with_graph_is_autograds(field.double(), t, x, 3)


def test_conditional_divergence_with_graph_matches_autograd_in_y():
    # Conditional training differentiates the divergence over y alone: the
    # closed form must give autograd's value and weight gradients, the
    # embedding's included (it shapes dv_y / dy through the context).
    torch.manual_seed(0)
    field = ConditionalVectorField(2, 3, (32, 16), (8, 4), n_fourier_features=8)
    state = torch.randn(9, 5, dtype=torch.float64)
    t = torch.rand(9, 1, dtype=torch.float64)
    _assert_divergence_with_graph_is_autograds(field.double(), t, state, 2)


def test_config_rebuilds_the_architecture():
    torch.manual_seed(0)
    field = VectorField(3, (16, 8), n_frequencies=2, n_fourier_features=6).double()
    rebuilt = VectorField.from_config(field.config()).double()
    rebuilt.load_state_dict(field.state_dict(), strict=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    assert_close(rebuilt(t, x), field(t, x), rtol=0, atol=0)


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_closed_form_hutchinson_matches_its_definition(activation):
    torch.manual_seed(0)
    field = VectorField(4, (32, 32), activation=activation).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor(0.8, dtype=torch.float64)
    probes = 2.0 * torch.randint(0, 2, (6, 3, 4)).double() - 1
    _, estimate = field.velocity_and_divergence(t, x, probes)
    jacobians = _jacobians(field, t, x)
    expected = torch.einsum("npi,nij,npj->n", probes, jacobians, probes) / 3
    assert_close(estimate, expected)


def test_closed_form_divergence_through_the_fourier_envelope():
    # At |x| ~ 10 in 2-D the envelope exp(-|x|^2 / 100) and its slope are far
    # from 1 and 0: the product rule of FourierFeatures.with_tangents matters.
    torch.manual_seed(0)
    field = VectorField(2, (16, 16), fourier_scale=3.0).double()
    x = 7.0 * torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor(0.9, dtype=torch.float64)
    _, divergence = field.velocity_and_divergence(t, x)
    assert_close(divergence, torch.einsum("nii->n", _jacobians(field, t, x)))
    probes = 2.0 * torch.randint(0, 2, (6, 2, 2)).double() - 1
    _, estimate = field.velocity_and_divergence(t, x, probes)
    expected = torch.einsum("npi,nij,npj->n", probes, _jacobians(field, t, x), probes)
    assert_close(estimate, expected / 2)


def test_fourier_features_vanish_far_from_the_data():
    field = VectorField(3, (8,))
    near = field.fourier_features(torch.zeros(1, 3))
    far = field.fourier_features(torch.full((1, 3), 100.0))
    assert near.abs().max() == 1.0  # cos(0) with an envelope of 1
    assert far.abs().max() == 0.0


def test_a_field_without_fourier_features_still_has_a_closed_form():
    # Models saved by skflow 0.1.0 load with n_fourier_features=0.
    torch.manual_seed(0)
    field = VectorField(3, (16,), n_fourier_features=0).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor(0.5, dtype=torch.float64)
    _, divergence = field.velocity_and_divergence(t, x)
    assert_close(divergence, torch.einsum("nii->n", _jacobians(field, t, x)))


@pytest.mark.parametrize("n_targets", [1, 3])
def test_conditional_field_moves_the_targets_only_with_their_exact_divergence(
    n_targets,
):
    # Rows are [y, x]: the velocity of x is exactly 0, and the closed-form
    # divergence is the trace of dv_y / dy (autograd's), per row's time;
    # Hutchinson probes spanning the whole row use their y part only.
    torch.manual_seed(0)
    field = ConditionalVectorField(n_targets, 2, (32, 16), (8, 4)).double()
    state = torch.randn(6, n_targets + 2, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    velocity, divergence = field.velocity_and_divergence(t, state)
    assert_close(velocity, field(t, state))
    assert torch.all(velocity[:, n_targets:] == 0)
    jacobians = torch.stack(
        [_jacobians(field, t[i], state[i : i + 1])[0] for i in range(6)]
    )[:, :n_targets, :n_targets]
    assert_close(divergence, torch.einsum("nii->n", jacobians))
    probes = 2.0 * torch.randint(0, 2, (6, 2, n_targets + 2)).double() - 1
    _, estimate = field.velocity_and_divergence(t, state, probes)
    y_probes = probes[..., :n_targets]
    expected = torch.einsum("npi,nij,npj->n", y_probes, jacobians, y_probes) / 2
    assert_close(estimate, expected)
    rebuilt = ConditionalVectorField.from_config(field.config()).double()
    rebuilt.load_state_dict(field.state_dict(), strict=True)
    assert_close(rebuilt(t, state), field(t, state), rtol=0, atol=0)
