import numpy as np
import pytest
import torch

from skflow._nets import VectorField
from skflow._ode import SolveFailedError, integrate, log_likelihood
from skflow._paths import LipmanPath
from skflow._rowwise import solve_each_row


def _rms_ratio(tolerance):
    def error_ratio(error, y_old, y_new):
        scale = tolerance * (1 + torch.maximum(y_old.abs(), y_new.abs()))
        return (error / scale).square().mean(1).sqrt()

    return error_ratio


def _decay(rates):
    # dy/ds = -rate y, one rate per row: y(1) = exp(-rate) y(0).
    def func(rows, s, y):
        return -rates[rows].unsqueeze(1) * y

    return func


def test_each_row_meets_its_tolerance_with_its_own_steps():
    rates = torch.tensor([0.1, 1.0, 10.0, 40.0], dtype=torch.float64)
    y0 = torch.ones(4, 2, dtype=torch.float64)
    y1, n_evaluations, failed, _ = solve_each_row(
        _decay(rates), y0, _rms_ratio(1e-8), first_step=0.05, max_steps=1000
    )
    expected = torch.exp(-rates).unsqueeze(1).expand(4, 2)
    # Local errors of 1e-8 over a few dozen steps: 1e-6 bounds the global one.
    torch.testing.assert_close(y1, expected, atol=1e-6, rtol=0)
    assert not failed.any()
    # Stiffer rows need more steps; the easy row is not dragged along.
    assert (n_evaluations.diff() > 0).all()


def test_a_row_solved_alone_or_in_a_batch_gives_the_same_result():
    rates = torch.tensor([0.5, 3.0, 20.0], dtype=torch.float64)
    y0 = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    together, *_ = solve_each_row(
        _decay(rates), y0, _rms_ratio(1e-6), first_step=0.05, max_steps=1000
    )
    for row in range(3):
        alone, *_ = solve_each_row(
            _decay(rates[row : row + 1]),
            y0[row : row + 1],
            _rms_ratio(1e-6),
            first_step=0.05,
            max_steps=1000,
        )
        assert torch.equal(alone[0], together[row])


def test_rows_that_blow_up_are_given_up_alone():
    # dy/ds = y^2 from y(0) = 2 reaches infinity at s = 0.5; from -2 it is fine.
    def func(rows, s, y):
        return y.square()

    y0 = torch.tensor([[2.0], [-2.0]], dtype=torch.float64)
    y1, n_evaluations, failed, _ = solve_each_row(
        func, y0, _rms_ratio(1e-6), first_step=0.05, max_steps=200
    )
    assert failed.tolist() == [True, False]
    # Local errors of 1e-6 per step: 1e-5 bounds the global one.
    expected = torch.tensor([-2 / 3], dtype=torch.float64)
    torch.testing.assert_close(y1[1], expected, atol=1e-5, rtol=0)
    assert n_evaluations[0] <= 6 * 200 + 1


def _points(n, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, dtype=torch.float64, generator=generator)


def _trained_like_field(dim, seed=0):
    torch.manual_seed(seed)
    field = VectorField(dim, (32, 32), n_fourier_features=16).double()
    for parameter in field.parameters():
        parameter.data.mul_(2.0)  # a field less smooth than at initialization
    return field


def test_log_likelihood_of_a_row_does_not_depend_on_its_batch():
    field = _trained_like_field(3)
    x = _points(40, 3, seed=1)
    base = LipmanPath(0.0).log_base_density
    options = {"solver": "dopri5-rowwise", "rtol": 1e-5, "atol": 1e-5}
    together, stats = log_likelihood(field, x, base, **options)
    shuffled = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    reordered, _ = log_likelihood(field, x[shuffled], base, **options)
    alone, _ = log_likelihood(field, x[:5], base, **options)
    # float64 matrix products of other shapes round differently: 1e-10 nats
    # is far below the solver tolerance, where shared steps move rows by ~1e-5.
    np.testing.assert_allclose(reordered, together[shuffled], atol=1e-10, rtol=0)
    np.testing.assert_allclose(alone, together[:5], atol=1e-10, rtol=0)
    assert stats.n_rows == 40
    assert stats.n_row_evaluations <= stats.n_evaluations * 40


def test_rowwise_log_likelihood_agrees_with_a_tight_shared_step_solve():
    field = _trained_like_field(2)
    x = _points(30, 2, seed=3)
    base = LipmanPath(0.0).log_base_density
    reference, _ = log_likelihood(field, x, base, rtol=1e-10, atol=1e-10)
    rowwise, _ = log_likelihood(
        field, x, base, solver="dopri5-rowwise", rtol=1e-6, atol=1e-6
    )
    # Local error estimates of 1e-6 per step, over tens of steps.
    np.testing.assert_allclose(rowwise, reference, atol=1e-4, rtol=0)


def test_rowwise_log_likelihood_with_hutchinson_probes_uses_each_rows_probes():
    field = _trained_like_field(3)
    x = _points(12, 3, seed=4)
    probes = torch.randint(0, 2, (12, 2, 3), generator=torch.Generator().manual_seed(5))
    probes = (2 * probes - 1).double()
    base = LipmanPath(0.0).log_base_density
    options = {"solver": "dopri5-rowwise", "rtol": 1e-6, "atol": 1e-6}
    together, _ = log_likelihood(field, x, base, probes=probes, **options)
    alone, _ = log_likelihood(field, x[7:8], base, probes=probes[7:8], **options)
    np.testing.assert_allclose(alone, together[7:8], atol=1e-10, rtol=0)


def test_rowwise_sampling_fails_loudly_on_rows_it_gives_up():
    def exploding(t, x):
        return x.square() * 100

    with pytest.raises(SolveFailedError, match="1 row"):
        integrate(
            exploding,
            torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
            solver="dopri5-rowwise",
            max_evaluations=600,
        )


def test_dense_output_follows_the_solution_between_the_steps():
    # dy/ds = -rate y: the order-4 continuous extension between steps of a
    # solve at 1e-8 matches exp(-rate s) to about the solve's own accuracy.
    rates = torch.tensor([0.5, 4.0, 15.0], dtype=torch.float64)
    y0 = torch.ones(3, 1, dtype=torch.float64)
    *_, dense = solve_each_row(
        _decay(rates), y0, _rms_ratio(1e-8), first_step=0.05, max_steps=1000, dense=True
    )
    times = torch.linspace(0, 1, 101, dtype=torch.float64)
    for row in range(3):
        rows = torch.full((101,), row)
        states = dense(rows, times)[:, 0]
        torch.testing.assert_close(
            states, torch.exp(-rates[row] * times), atol=1e-6, rtol=0
        )
