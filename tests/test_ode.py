import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.testing import assert_close

from skflow._nets import VectorField
from skflow._ode import (
    FIXED_STEP_SOLVERS,
    SLACK_FROM_FEATURES,
    SolveFailedError,
    exact_divergence,
    hutchinson_divergence,
    integrate,
    log_likelihood,
    quadrature_slack,
)
from skflow._paths import LipmanPath
from skflow._training import train_vector_field


class GaussianField(torch.nn.Module):
    """The exact flow-matching field for data N(m, S) on the "fm" path, sigma 0.

    The marginal at t is N(t m, Sigma_t) with Sigma_t = t^2 S + (1 - t)^2 I
    and v*(x, t) = m + (t S - (1 - t) I) Sigma_t^{-1} (x - t m) (MATH.md).
    """

    def __init__(self, mean, covariance):
        super().__init__()
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.covariance = torch.as_tensor(covariance, dtype=torch.float64)

    def forward(self, t, x):
        # t: a scalar, or one time per row (the rowwise solver's).
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1, 1)
        eye = torch.eye(len(self.mean), dtype=torch.float64)
        sigma_t = t**2 * self.covariance + (1 - t) ** 2 * eye
        gain = (t * self.covariance - (1 - t) * eye) @ torch.linalg.inv(sigma_t)
        centred = (x - t[:, :, 0] * self.mean).unsqueeze(-1)
        return self.mean + (gain @ centred).squeeze(-1)


def _gaussian(dim, seed=0):
    rng = np.random.RandomState(seed)
    mean = rng.normal(size=dim)
    a = rng.normal(size=(dim, dim))
    covariance = a @ a.T / dim + 0.3 * np.eye(dim)
    return mean, covariance


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize(
    "solver, n_steps, method",
    [
        ("dopri5", None, "quadrature"),
        ("dopri5", None, "augmented"),
        ("dopri8", None, "quadrature"),
        ("dopri5-rowwise", None, "auto"),
        # 1,600 evaluations of the augmented system: the slow run's.
        pytest.param("rk4", 400, "augmented", marks=pytest.mark.slow),
    ],
)
def test_likelihood_of_analytic_gaussian_field(dim, solver, n_steps, method):
    # The likelihood ODE with the exact field must reproduce log N(x; m, S):
    # no training involved, so this isolates the solver and the divergence.
    # Tolerance 1e-4 nats: at rtol = atol = 1e-10 (rk4: 400 steps, error
    # O(h^4) ~ 1e-9 on this smooth field) the solve is far more precise.
    mean, covariance = _gaussian(dim)
    field = GaussianField(mean, covariance)
    X = multivariate_normal(mean, covariance).rvs(50, random_state=1).reshape(50, dim)
    log_density, stats = log_likelihood(
        field,
        torch.as_tensor(X),
        LipmanPath(0.0).log_base_density,
        solver=solver,
        n_steps=n_steps,
        rtol=1e-10,
        atol=1e-10,
        method=method,
    )
    expected = multivariate_normal(mean, covariance).logpdf(X)
    np.testing.assert_allclose(log_density.numpy(), expected, atol=1e-4, rtol=0)
    assert stats.n_evaluations >= stats.n_divergence_evaluations > 0


def test_sampling_the_analytic_field_gives_the_gaussian():
    # Pushing N(0, I) through the exact field lands on N(m, S): the flow map of
    # this affine field is affine, so 20,000 samples pin the mean and
    # covariance to about 0.02.
    mean, covariance = _gaussian(2)
    noise = torch.randn(
        20_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    samples, _ = integrate(GaussianField(mean, covariance), noise, rtol=1e-8, atol=1e-8)
    samples = samples.numpy()
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(samples.T), covariance, atol=0.05)


def _random_mlp_and_points(dim, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(dim, 32), torch.nn.SiLU(), torch.nn.Linear(32, dim)
    ).double()
    x = torch.randn(7, dim, dtype=torch.float64, requires_grad=True)
    return net, x


@pytest.mark.parametrize("dim", [1, 3, 8])
def test_exact_divergence_is_the_jacobian_trace(dim):
    net, x = _random_mlp_and_points(dim)
    divergence = exact_divergence(net(x), x)
    expected = torch.stack(
        [torch.autograd.functional.jacobian(net, row).trace() for row in x.detach()]
    )
    assert_close(divergence, expected)


def test_hutchinson_divergence_is_unbiased():
    # Averaged over all 2^d Rademacher sign vectors the estimate is the
    # trace exactly: E[eps^T J eps] = tr J, term by term.
    dim = 3
    net, x = _random_mlp_and_points(dim)
    signs = torch.tensor(
        [[i >> k & 1 for k in range(dim)] for i in range(2**dim)], dtype=torch.float64
    )
    probes = (2 * signs - 1)[None].expand(len(x), 2**dim, dim).contiguous()
    estimate = hutchinson_divergence(net(x), x, probes)
    assert_close(estimate, exact_divergence(net(x), x))


@pytest.mark.parametrize("solver", sorted(FIXED_STEP_SOLVERS))
def test_fixed_step_solver_needs_n_steps(solver):
    field = GaussianField([0.0], [[1.0]])
    x = torch.zeros(3, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_steps"):
        integrate(field, x, solver=solver)


def test_fixed_step_solver_takes_n_steps():
    calls = []

    def field(t, x):
        calls.append(float(t))
        return torch.ones_like(x)

    x = torch.zeros(2, 1, dtype=torch.float64)
    out, stats = integrate(field, x, solver="euler", n_steps=10)
    assert len(calls) == stats.n_evaluations == 10
    assert_close(out, torch.ones_like(x))


def test_quadrature_and_augmented_agree_on_a_trained_field():
    # Same trajectory tolerance, two ways to integrate the divergence: they
    # agree to the solver's accuracy (float64, rtol = atol = 1e-8). The
    # network is this test's own, not the estimator's default: 200 steps of
    # flow matching on a 3-D Gaussian give it the curvature of a real field.
    torch.manual_seed(0)
    field = VectorField(3, (32, 32), n_fourier_features=32, fourier_scale=2.0)
    data = torch.as_tensor(np.random.RandomState(0).normal(size=(300, 3)))
    path = LipmanPath(0.01)
    field, _, _ = train_vector_field(
        field.double(),
        path,
        data,
        torch.ones(300, dtype=torch.float64),
        max_iter=200,
        batch_size=64,
        learning_rate=2e-3,
        generator=torch.Generator().manual_seed(0),
    )
    values = {
        method: log_likelihood(
            field,
            data[:50],
            path.log_base_density,
            rtol=1e-8,
            atol=1e-8,
            method=method,
        )[0]
        for method in ("augmented", "quadrature")
    }
    assert_close(values["quadrature"], values["augmented"], rtol=0, atol=1e-6)


def test_unknown_likelihood_method():
    field = GaussianField([0.0], [[1.0]])
    x = torch.zeros(3, 1, dtype=torch.float64)
    base = LipmanPath(0.0).log_base_density
    with pytest.raises(ValueError, match="Unknown method"):
        log_likelihood(field, x, base, method="magic")
    with pytest.raises(ValueError, match="needs an adaptive solver"):
        log_likelihood(field, x, base, solver="rk4", n_steps=4, method="quadrature")


class ExplodingField(torch.nn.Module):
    """dx/dt = x^2 blows up in finite time: no adaptive solve can finish."""

    def forward(self, t, x):
        return x**2


@pytest.mark.parametrize("method", ["quadrature", "augmented"])
def test_adaptive_solves_give_up_after_their_budget(method):
    x = torch.full((3, 2), 2.0, dtype=torch.float64)
    with pytest.raises(SolveFailedError, match="gave up after 50 evaluations"):
        log_likelihood(
            ExplodingField(),
            x,
            LipmanPath(0.0).log_base_density,
            method=method,
            max_evaluations=50,
        )
    with pytest.raises(SolveFailedError, match="gave up after 50 evaluations"):
        integrate(ExplodingField(), x, max_evaluations=50)


def test_a_state_that_overflows_fails_instead_of_hanging():
    # Backwards from t = 1, x(t) = 1 / (1 + 1 / x1 - t) reaches infinity at
    # t = 0.5 for x1 = -2: the step size underflows there.
    x = torch.full((3, 2), -2.0, dtype=torch.float64)
    with pytest.raises(SolveFailedError):
        log_likelihood(ExplodingField(), x, LipmanPath(0.0).log_base_density)


def test_fixed_step_solvers_have_no_budget():
    x = torch.full((3, 2), 0.1, dtype=torch.float64)
    log_density, stats = log_likelihood(
        ExplodingField(),
        x,
        LipmanPath(0.0).log_base_density,
        solver="euler",
        n_steps=100,
        max_evaluations=50,
    )
    assert stats.n_evaluations == 100
    assert torch.isfinite(log_density).all()


def test_the_quadrature_buys_accuracy_where_its_nodes_are_cheap():
    # A divergence node costs d + 1 passes: below SLACK_FROM_FEATURES the
    # quadrature keeps the tighter slack, from there on the looser one.
    low = quadrature_slack(2)
    assert quadrature_slack(SLACK_FROM_FEATURES - 1) == low
    assert quadrature_slack(SLACK_FROM_FEATURES) > low
    assert quadrature_slack(64) == quadrature_slack(SLACK_FROM_FEATURES)
