import math

import numpy as np
import pytest
import torch

from skflow._quadrature import GaussKronrod15, integrate_panels


@pytest.mark.parametrize("degree", range(24))
def test_rules_are_exact_for_polynomials(degree):
    # 15-point Kronrod: exact to degree 23; embedded 7-point Gauss: to 13.
    rule = GaussKronrod15
    exact = 2 / (degree + 1) if degree % 2 == 0 else 0.0
    kronrod = np.sum(rule.kronrod_weights * rule.nodes**degree)
    gauss = np.sum(rule.gauss_weights * rule.nodes**degree)
    assert kronrod == pytest.approx(exact, abs=1e-13)
    if degree <= 13:
        assert gauss == pytest.approx(exact, abs=1e-13)


def _exponentials(rates):
    rates = torch.tensor(rates, dtype=torch.float64)

    def integrand(times):
        t = torch.tensor(times, dtype=torch.float64)[:, None]
        return torch.exp(rates * t)

    exact = torch.expm1(rates) / rates
    return integrand, exact


def test_smooth_integrands_need_no_refinement():
    integrand, exact = _exponentials([-3.0, 0.5, 2.0])
    calls = []

    def counted(times):
        calls.append(times)
        return integrand(times)

    integral, converged = integrate_panels(
        counted, edges=[0.0, 0.5, 1.0], tolerance=lambda k: torch.tensor(1e-8)
    )
    assert converged
    assert len(calls) == 2  # the two initial panels
    torch.testing.assert_close(integral, exact, rtol=1e-13, atol=0)


def test_sharp_integrand_is_refined_until_accurate():
    # A narrow Lorentzian peak at 0.7: its integral is known in closed form.
    width = 1e-3

    def integrand(times):
        t = torch.tensor(times, dtype=torch.float64)[:, None]
        return width / ((t - 0.7) ** 2 + width**2)

    exact = math.atan(0.3 / width) + math.atan(0.7 / width)
    integral, converged = integrate_panels(
        integrand,
        edges=[0.0, 0.5, 1.0],
        tolerance=lambda k: torch.tensor(1e-8),
        max_depth=30,
    )
    assert converged
    assert integral.item() == pytest.approx(exact, rel=1e-8)
    _, converged = integrate_panels(
        integrand,
        edges=[0.0, 0.5, 1.0],
        tolerance=lambda k: torch.tensor(1e-8),
        max_depth=2,
    )
    assert not converged


def test_prepare_sees_every_time_before_it_is_needed():
    integrand, _ = _exponentials([1.0])
    prepared = set()

    def prepare(needed, ahead):
        prepared.update(needed, ahead)

    def checked(times):
        assert set(times) <= prepared
        return integrand(times)

    integrate_panels(
        checked,
        edges=[0.0, 1.0],
        tolerance=lambda k: torch.tensor(0.0),
        prepare=prepare,
        max_depth=3,
    )
