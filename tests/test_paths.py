import itertools
import math

import pytest
import torch
from torch.testing import assert_close

from skflow._paths import PATHS, OptimalTransportPath, make_path

SIGMAS = [0.0, 0.1]


def _pair(n=64, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, d)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    x1 = 2.0 + torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    return x0, x1, eps


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("sigma", SIGMAS)
def test_path_endpoints(name, sigma):
    path = make_path(name, sigma)
    x0, x1, eps = _pair()
    zeros = torch.zeros(len(x0), 1, dtype=torch.float64)
    x_start, _ = path.interpolate(x0, x1, zeros, eps)
    x_end, _ = path.interpolate(x0, x1, zeros + 1, eps)
    if name == "fm":
        # Lipman's path: x0 at t = 0, x1 + sigma x0 at t = 1.
        assert_close(x_start, x0)
        assert_close(x_end, x1 + sigma * x0)
    else:
        # The others carry the same sigma * eps blur at both ends.
        assert_close(x_start, x0 + sigma * eps)
        assert_close(x_end, x1 + sigma * eps)


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("sigma", SIGMAS)
def test_path_target_is_time_derivative(name, sigma):
    # u_t must equal d x_t / dt for fixed (x0, x1, eps): central differences,
    # whose error is O(h^2) ~ 1e-12 on these smooth paths.
    path = make_path(name, sigma)
    x0, x1, eps = _pair()
    g = torch.Generator().manual_seed(1)
    t = torch.rand(len(x0), 1, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * t
    h = 1e-6
    x_plus, _ = path.interpolate(x0, x1, t + h, eps)
    x_minus, _ = path.interpolate(x0, x1, t - h, eps)
    _, u_t = path.interpolate(x0, x1, t, eps)
    assert_close(u_t, (x_plus - x_minus) / (2 * h), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_base_density_is_the_t0_marginal(name):
    sigma = 0.5
    path = make_path(name, sigma)
    expected_std = 1.0 if name == "fm" else math.sqrt(1 + sigma**2)
    assert path.base_std == pytest.approx(expected_std)

    # Empirical spread of x_t at t = 0 matches base_std.
    x0, x1, eps = _pair(n=200_000, d=1)
    x_start, _ = path.interpolate(x0, x1, torch.zeros(len(x0), 1, dtype=x0.dtype), eps)
    assert x_start.std().item() == pytest.approx(expected_std, rel=0.01)

    # log_base_density is the normal log density of that spread.
    z = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, expected_std).log_prob(z).sum(-1)
    assert_close(path.log_base_density(z), expected)

    g = torch.Generator().manual_seed(0)
    draws = path.sample_base(
        100_000, 2, generator=g, device=torch.device("cpu"), dtype=torch.float64
    )
    assert draws.std().item() == pytest.approx(expected_std, rel=0.01)


def test_ot_pairing_is_the_optimal_permutation():
    x0, x1, _ = _pair(n=6, d=2)
    paired = OptimalTransportPath(0.0).couple(x0, x1)
    # The pairing is a permutation of the noise...
    assert sorted(paired[:, 0].tolist()) == sorted(x0[:, 0].tolist())
    # ...with the smallest total squared distance of all 720 permutations.
    best = min(
        (x1 - x0[list(p)]).square().sum().item()
        for p in itertools.permutations(range(6))
    )
    assert (x1 - paired).square().sum().item() == pytest.approx(best)


def test_ot_pairing_is_optimal_within_each_block(monkeypatch):
    monkeypatch.setattr(OptimalTransportPath, "block_rows", 4)
    x0, x1, _ = _pair(n=10, d=2)
    paired = OptimalTransportPath(0.0).couple(x0, x1)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):
        # Each block's noise is permuted within the block, optimally.
        assert sorted(paired[rows, 0].tolist()) == sorted(x0[rows, 0].tolist())
        n = rows.stop - rows.start
        best = min(
            (x1[rows] - x0[rows][list(p)]).square().sum().item()
            for p in itertools.permutations(range(n))
        )
        cost = (x1[rows] - paired[rows]).square().sum().item()
        assert cost == pytest.approx(best)


def test_unknown_path_and_negative_sigma():
    with pytest.raises(ValueError, match="Unknown path"):
        make_path("nope", 0.0)
    with pytest.raises(ValueError, match="sigma"):
        make_path("fm", -1.0)


def _gaussian_path_batch(t, n, d=3, data_std=0.7, sigma=0.05, seed=0):
    """x_t, u_t on Lipman's path for data N(0, data_std^2 I), whose exact
    field is linear, v = a(t) x (shared/MATH.md, closed forms)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    x1 = data_std * torch.randn(n, d, generator=g, dtype=torch.float64)
    times = torch.full((n, 1), t, dtype=torch.float64)
    x_t, u_t = make_path("fm", sigma).interpolate(x0, x1, times, None)
    width = 1 - (1 - sigma) * t
    a = (t * data_std**2 - (1 - sigma) * width) / (t**2 * data_std**2 + width**2)
    return times, x_t, u_t, a


@pytest.mark.parametrize("t", [0.3, 0.8])
def test_divergence_residual_is_centred_only_for_the_true_field(t):
    # E[residual | x_t] = 0 for the field that generates the path: the
    # residual is uncorrelated with 1 and |x_t|^2. A field 20% too fast
    # (with its own, exact, divergence) has a mean residual of zero too (a
    # linear field's always is) but one that grows with |x_t|^2. 200,000
    # rows: the bounds are 4 standard errors of each mean.
    sigma, n, d = 0.05, 200_000, 3
    path = make_path("fm", sigma)
    times, x_t, u_t, a = _gaussian_path_batch(t, n, d=d, sigma=sigma)
    radius2 = x_t.square().sum(-1)
    for speed, centred in ((1.0, True), (1.2, False)):
        velocity = speed * a * x_t
        divergence = torch.full((n,), speed * a * d, dtype=torch.float64)
        residual = path.divergence_residual(times, x_t, u_t, velocity, divergence)
        for moment in (residual, residual * (radius2 - radius2.mean())):
            bound = 4 * float(moment.std()) / math.sqrt(n)
            assert abs(float(moment.mean())) < bound or not centred
        assert (abs(float(moment.mean())) < bound) == centred


def test_divergence_residual_needs_the_lipman_path():
    times, x_t, u_t, _ = _gaussian_path_batch(0.5, 4)
    for name in sorted(set(PATHS) - {"fm"}):
        with pytest.raises(NotImplementedError, match="path='fm'"):
            make_path(name, 0.1).divergence_residual(times, x_t, u_t, x_t, x_t.sum(-1))
