import torch
from torch.testing import assert_close

from skflow.nets import TimeFeatures, VectorField


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


def test_closed_form_divergence_matches_autograd():
    torch.manual_seed(0)
    field = VectorField(5, (32, 24, 16)).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    velocity, divergence = field.velocity_and_divergence(t, x)
    assert_close(velocity, field(t, x))
    jacobians = _jacobians(field, t, x)
    assert_close(divergence, torch.einsum("nii->n", jacobians))


def test_closed_form_hutchinson_matches_its_definition():
    torch.manual_seed(0)
    field = VectorField(4, (32, 32)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor(0.8, dtype=torch.float64)
    probes = 2.0 * torch.randint(0, 2, (6, 3, 4)).double() - 1
    _, estimate = field.velocity_and_divergence(t, x, probes)
    jacobians = _jacobians(field, t, x)
    expected = torch.einsum("npi,nij,npj->n", probes, jacobians, probes) / 3
    assert_close(estimate, expected)
