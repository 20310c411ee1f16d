"""Shared options. ``pytest --device cuda`` runs the estimator tests there."""

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the estimator tests (default: cpu)",
    )


@pytest.fixture
def device(request):
    return request.config.getoption("--device")
