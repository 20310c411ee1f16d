"""Shared options. ``pytest --device cuda`` runs the estimator tests there.

Data and estimator configurations shared by the tests are in ``_data.py``.
"""

import importlib.util

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the estimator tests (default: cpu)",
    )


def pytest_collection_modifyitems(config, items):
    # skflow/blockwise.py's example needs the optional dask extra, like
    # test_blockwise.py (which skips itself): without dask it is skipped,
    # not failed. This hook sees every collected item, the package's
    # doctests included.
    if importlib.util.find_spec("dask") is not None:
        return
    skip = pytest.mark.skip(reason="needs dask: pip install 'skflow[dask]'")
    for item in items:
        if item.name == "skflow.blockwise.dask_score_samples":
            item.add_marker(skip)


@pytest.fixture
def device(request):
    return request.config.getoption("--device")
